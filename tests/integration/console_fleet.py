"""A whole small fleet for console tests: a real Redis (the test's), two real tone workers, a
real orchestrator and the real console, all on 127.0.0.1.

    async with running_fleet(redis_url) as fleet:
        await fleet.http.sign_in(TOKEN)
        ...
        assert await fleet.sessions("tone-rt02", 3) == ["w1", "w1", "w1"]

w1 starts with tone-rt02 resident beside the default tone-fast; w2 holds only tone-fast, so
the orchestrator's default (least_loaded, prefer_resident_models) sends tone-rt02 to w1 alone
and a strategy that ignores residency (round_robin) visibly does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as redis
from duplex.console.app import ConsoleServer
from duplex.console.config import ConsoleConfig, ConsoleRedisConfig, ConsoleSection
from duplex.console.state import ConsoleState
from duplex.orchestrator.app import OrchestratorServer
from duplex.registry import keys
from duplex.workerclient import WorkerClient

from tests.integration.console_client import ConsoleClient
from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    wait_for_workers,
)
from tests.integration.worker_fixtures import RunningWorker, running_worker, worker_config

TOKEN = "console-test-admin-token"
LIMIT_S = 10.0


@dataclass
class Fleet:
    """The running parts and a signed-out HTTP client of the console."""

    redis: redis.Redis  # decode_responses: for what the tests read back
    workers: dict[str, RunningWorker]
    orchestrator: OrchestratorServer
    console: ConsoleServer
    http: ConsoleClient

    @property
    def state(self) -> ConsoleState:
        state: ConsoleState = self.console.app.state.console
        return state

    async def sign_in(self) -> str:
        """Sign the HTTP client in; returns the session's CSRF token (as a page carries it)."""
        assert (await self.http.sign_in(TOKEN)).status == 303
        return (await self.http.get("/routing")).csrf()

    async def session(self, model_id: str | None = "tone-rt02") -> str:
        """One orchestrator session, started and ended cleanly; the worker it was routed to."""
        fields = {"model_id": model_id} if model_id is not None else {}
        async with Client(self.orchestrator) as client:
            reply = await client.start(**fields)
            assert reply["type"] == "SessionStarted", reply
            await client.send({"type": "SessionEnd"})
            await client.wait_for(lambda got: bool(got.of_type("SessionEnded")))
        return str(reply["worker"])

    async def sessions(self, model_id: str | None, count: int) -> list[str]:
        return [await self.session(model_id) for _ in range(count)]

    async def resident(self, worker: str) -> set[str]:
        """The worker's resident models, asked of the worker itself (not of a heartbeat)."""
        client = WorkerClient(self.workers[worker].target)
        try:
            models = await client.list_models()
        finally:
            await client.close()
        return {m.model_id for m in models.models if m.resident}

    async def steering(self) -> tuple[dict[str, str], set[str]]:
        """What the console may change in Redis: the routing hash and the drained set."""
        routing = await self.redis.hgetall(keys.ROUTING)
        drained = await self.redis.smembers(keys.DRAINED)
        return {str(k): str(v) for k, v in routing.items()}, {str(n) for n in drained}


async def until(predicate: Callable[[], bool], what: str, limit_s: float = LIMIT_S) -> None:
    """Poll a condition with a deadline (views follow Redis within a reconcile or an event)."""
    try:
        async with asyncio.timeout(limit_s):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"waited {limit_s:.0f} s for {what}") from None


def console_config(redis_url: str) -> ConsoleConfig:
    return ConsoleConfig(
        console=ConsoleSection(
            host="127.0.0.1", port=0, admin_token=TOKEN, session_secret="t" * 32, refresh_ms=250
        ),
        redis=ConsoleRedisConfig(url=redis_url, worker_ttl_ms=1000, reconcile_interval_ms=200),
    )


@asynccontextmanager
async def running_fleet(redis_url: str) -> AsyncIterator[Fleet]:
    async with AsyncExitStack() as stack:
        w1 = await stack.enter_async_context(
            running_worker(worker_config(redis_url, name="w1", preload_model_ids=("tone-rt02",)))
        )
        w2 = await stack.enter_async_context(running_worker(worker_config(redis_url, name="w2")))
        orch = await stack.enter_async_context(running_orchestrator(orch_config(redis_url)))
        console = await stack.enter_async_context(ConsoleServer(console_config(redis_url)))
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        stack.push_async_callback(client.aclose)
        fleet = Fleet(client, {"w1": w1, "w2": w2}, orch, console, ConsoleClient(console.url))
        await wait_for_workers(orch, {"w1", "w2"})
        await until(lambda: {"w1", "w2"} <= set(fleet.state.view.workers()), "the console's view")
        yield fleet
