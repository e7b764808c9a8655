"""Several orchestrators share one Redis and route fairly: each decision is counted in
`inflight:{worker}` (real redis-server), seen by the others through keyspace events, removed
when the session ends, and forgotten after its lease when its orchestrator crashed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import redis.asyncio as aioredis
from duplex.registry.inflight import SharedInflight, inflight_key

from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    wait_for_workers,
)
from tests.integration.worker_fixtures import running_worker, worker_config

WORKERS = ("w1", "w2", "w3", "w4")


async def until(predicate: Callable[[], bool], limit_s: float = 5.0) -> float:
    """Seconds until `predicate()` holds (polled every 5 ms)."""
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        while True:
            if predicate():
                return time.monotonic() - started
            await asyncio.sleep(0.005)


async def test_a_burst_of_12_over_two_orchestrators_splits_3_3_3_3(redis_url: str) -> None:
    async with AsyncExitStack() as stack:
        for name in WORKERS:
            # Heartbeats slower than the burst: only the shared counts can spread it.
            config = worker_config(redis_url, name=name, heartbeat_interval_ms=1000,
                                   worker_ttl_ms=3000)  # fmt: skip
            await stack.enter_async_context(running_worker(config))
        orchestrators = [
            await stack.enter_async_context(running_orchestrator(orch_config(redis_url)))
            for _ in range(2)
        ]
        for orch in orchestrators:
            await wait_for_workers(orch, WORKERS, exact=True)
        # Steady state: each orchestrator knows the other (their publishers' index).
        shared = [o.app.state.runtime.router.shared for o in orchestrators]
        await until(lambda: all(s.orchestrators == 2 for s in shared))
        clients = [await stack.enter_async_context(Client(orchestrators[i % 2])) for i in range(12)]
        started = time.monotonic()
        replies = await asyncio.gather(*(c.start(model_id="tone-fast") for c in clients))
        elapsed_ms = (time.monotonic() - started) * 1000
        split = Counter(r["worker"] for r in replies)
        per_orch = [Counter(r["worker"] for r in replies[i::2]) for i in range(2)]
        print(f"12 sessions in {elapsed_ms:.0f} ms: {dict(split)}; per orchestrator {per_orch}")
        assert split == dict.fromkeys(WORKERS, 3)
        probe = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            sizes = [await probe.zcard(inflight_key(w)) for w in WORKERS]
            assert sizes == [3, 3, 3, 3]
            for client in clients:
                await client.__aexit__(None, None, None)
            waited = await _until_async(
                lambda: _sizes(probe), lambda s: s == [0, 0, 0, 0], limit_s=5.0
            )
            print(f"every entry removed {waited * 1000:.0f} ms after the sessions ended")
        finally:
            await probe.aclose()


async def _sizes(probe: aioredis.Redis) -> list[int]:
    return [int(await probe.zcard(inflight_key(w))) for w in WORKERS]


async def _until_async(
    read: Callable[[], Awaitable[list[int]]], ok: Callable[[list[int]], bool], *, limit_s: float
) -> float:
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        while True:
            if ok(await read()):
                return time.monotonic() - started
            await asyncio.sleep(0.02)


async def test_a_crashed_orchestrators_entries_stop_counting_after_their_lease(
    redis_url: str,
) -> None:
    a = SharedInflight(redis_url, "orch-a", lease_s=0.6, reconcile_s=0.1)
    b = SharedInflight(redis_url, "orch-b", lease_s=0.6, reconcile_s=0.1)
    a.start()
    b.start()
    try:
        b.watch(["w1"])
        first = a.add("w1", time.time())
        a.add("w1", time.time())
        seen_ms = await until(lambda: b.others("w1", since=0) == 2) * 1000
        print(f"the other orchestrator saw both entries after {seen_ms:.1f} ms")
        a.remove("w1", first)
        await until(lambda: b.others("w1", since=0) == 1)
        assert b.others("w1", since=time.time()) == 0  # the heartbeat shows it already
        # Crash: a's tasks die without withdrawing its entry; its lease is no longer renewed.
        for task in a._tasks:
            task.cancel()
        await asyncio.gather(*a._tasks, return_exceptions=True)
        gone_s = await until(lambda: b.others("w1", since=0) == 0, limit_s=3.0)
        print(f"a crashed orchestrator's entry stopped counting after {gone_s:.2f} s")
    finally:
        a._tasks = []
        await a.stop()
        await b.stop()
