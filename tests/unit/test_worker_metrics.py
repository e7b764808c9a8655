"""The worker's Prometheus metrics as the scheduler, sessions and model manager record them,
and the /metrics server's bind address and shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from duplex.worker.adapters.base import AdapterOptions, Int16Array
from duplex.worker.adapters.tone import ToneVoice
from duplex.worker.catalog import Catalog, ModelSpec
from duplex.worker.metrics import (
    METRIC_NAMES,
    LoadOutcome,
    MetricsServer,
    WorkerPromMetrics,
    load_outcome,
)
from duplex.worker.model_manager import (
    ModelBusy,
    ModelLoadFailed,
    ModelManager,
    ModelManagerConfig,
)
from duplex.worker.scheduler import JobCancelled, SynthesisJob, SynthesisScheduler
from duplex.worker.session import Session
from duplex.worker.session_messages import SessionSettings
from prometheus_client import generate_latest

W = "tts-test@0"


def _value(metrics: WorkerPromMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"worker": W, **labels})


# -- scheduler ------------------------------------------------------------------------------


class GatedVoice:
    """One chunk of audio per text, released by a gate (so a job can be held running)."""

    sample_rate = 16000

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.gate = threading.Event()

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        assert self.gate.wait(5)
        yield np.zeros(1600, np.int16)  # 0.1 s

    def close(self) -> None:
        pass


def _job(voice: object, done: list[BaseException | None], session_id: str = "s") -> SynthesisJob:
    return SynthesisJob(
        session_id=session_id,
        voice=voice,  # type: ignore[arg-type]
        text="Some words.",
        deadline=time.monotonic(),
        on_audio=lambda _chunk: None,
        on_done=done.append,
    )


def _wait(condition: object, limit_s: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_completed_clause_jobs_record_synthesis_seconds_and_rtf_per_model() -> None:
    """Each completed job adds one synthesis-seconds and one RTF observation under its
    model's label; the RTF sum is synthesis seconds over audio seconds."""
    metrics = WorkerPromMetrics(W)
    scheduler = SynthesisScheduler(1, metrics=metrics)
    scheduler.start()
    done: list[BaseException | None] = []
    try:
        for _ in range(3):
            scheduler.submit(_job(ToneVoice("tone-fast", 24000, 0.0), done))
        _wait(lambda: len(done) == 3)
    finally:
        scheduler.close()
    assert done == [None, None, None]
    count = _value(metrics, "duplex_worker_synthesis_seconds_count", model="tone-fast")
    assert count == 3
    assert _value(metrics, "duplex_worker_rtf_count", model="tone-fast") == 3
    stats = scheduler.stats()
    synth = _value(metrics, "duplex_worker_synthesis_seconds_sum", model="tone-fast")
    assert synth == pytest.approx(stats.synth_seconds)
    rtf_sum = _value(metrics, "duplex_worker_rtf_sum", model="tone-fast")
    assert rtf_sum is not None and rtf_sum > 0


def test_a_cancelled_job_records_no_synthesis_time() -> None:
    """A job cancelled while queued says nothing about speed: no observation."""
    metrics = WorkerPromMetrics(W)
    scheduler = SynthesisScheduler(1, metrics=metrics)
    scheduler.start()
    voice = GatedVoice("gated")
    done: list[BaseException | None] = []
    try:
        scheduler.submit(_job(voice, done, "a"))
        handle = scheduler.submit(_job(voice, done, "b"))
        _wait(lambda: scheduler.stats().running == 1)
        handle.cancel()
        voice.gate.set()
        _wait(lambda: len(done) == 2)
    finally:
        scheduler.close()
    assert isinstance(done[0], JobCancelled) and done[1] is None
    assert _value(metrics, "duplex_worker_synthesis_seconds_count", model="gated") == 1


def test_queue_depth_is_the_schedulers_count_of_queued_and_running_jobs() -> None:
    """The gauge reads queued + running jobs at scrape time, and 0 once they are done."""
    metrics = WorkerPromMetrics(W)
    scheduler = SynthesisScheduler(1, metrics=metrics)
    scheduler.start()
    voice = GatedVoice("gated")
    done: list[BaseException | None] = []
    try:
        for _ in range(3):
            scheduler.submit(_job(voice, done))
        _wait(lambda: scheduler.stats().running == 1)
        assert _value(metrics, "duplex_worker_queue_depth") == 3
        voice.gate.set()
        _wait(lambda: len(done) == 3)
        assert _value(metrics, "duplex_worker_queue_depth") == 0
    finally:
        scheduler.close()


# -- session --------------------------------------------------------------------------------


class ManualScheduler:
    """Keeps jobs; the test completes them."""

    def __init__(self) -> None:
        self.jobs: list[SynthesisJob] = []

    def submit(self, job: SynthesisJob) -> object:
        self.jobs.append(job)
        return object()

    def cancel_session(self, session_id: str) -> int:
        for job in self.jobs:
            job.on_done(JobCancelled("cancelled"))
        count, self.jobs = len(self.jobs), []
        return count

    def idle_threads(self) -> int:
        return 1

    def finish(self, samples: int) -> None:
        job = self.jobs.pop(0)
        job.on_audio(np.full(samples, 1000, dtype=np.int16))
        job.on_done(None)


class FixedVoice:
    model_id = "fixed"
    sample_rate = 24000

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        raise AssertionError("not called")

    def close(self) -> None:
        pass


async def _next(events: object, limit_s: float = 5.0) -> object:
    async with asyncio.timeout(limit_s):
        return await anext(events)  # type: ignore[call-overload]


async def test_first_frame_latency_is_observed_once_per_utterance_from_its_first_text() -> None:
    """The histogram gets one observation per utterance, at least the time the test held
    the synthesis back between the text and the first frame."""
    metrics = WorkerPromMetrics(W)
    sched = ManualScheduler()
    session = Session("s", FixedVoice(), sched, SessionSettings(24000, lead_ms=0), metrics=metrics)
    session.push_text("A short one.", is_final=True)
    events = session.events()
    await asyncio.sleep(0.05)  # "synthesis" takes 50 ms
    sched.finish(2400)  # 100 ms: five frames
    for _ in range(5):
        await _next(events)
    assert _value(metrics, "duplex_worker_first_frame_seconds_count") == 1
    first = _value(metrics, "duplex_worker_first_frame_seconds_sum")
    assert first is not None and first >= 0.05
    session.push_text("Another one.", is_final=True)
    await _next(events)  # the first utterance's end
    sched.finish(480)
    await _next(events)
    assert _value(metrics, "duplex_worker_first_frame_seconds_count") == 2
    session.close()
    await events.aclose()  # type: ignore[attr-defined]


async def test_an_underrun_increments_the_counter_once_per_gap() -> None:
    """A sender that runs dry while the client waits adds exactly one to the counter."""
    metrics = WorkerPromMetrics(W)
    sched = ManualScheduler()
    settings = SessionSettings(24000, lead_ms=20)
    session = Session("s", FixedVoice(), sched, settings, metrics=metrics)
    session.push_text("First clause here, second clause there.", is_final=True)
    events = session.events()
    sched.finish(1200)
    for _ in range(3):
        await _next(events)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.25)  # well past the audio sent
    assert session.underruns == 1
    assert _value(metrics, "duplex_worker_underruns_total") == 1
    sched.finish(480)
    await asyncio.wait_for(pending, 5)
    session.close()
    await events.aclose()


# -- model manager --------------------------------------------------------------------------


class Voice:
    sample_rate = 16000

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        yield np.zeros(160, np.int16)

    def close(self) -> None:
        pass


class Adapter:
    """Loads every model, except those in `errors`, which raise the given exception."""

    name = "fake"

    def __init__(self, errors: dict[str, BaseException] | None = None) -> None:
        self.errors = errors or {}

    def load(self, spec: ModelSpec, options: AdapterOptions) -> Voice:
        error = self.errors.get(spec.model_id)
        if error is not None:
            raise error
        return Voice(spec.model_id)


IDS = ("m0", "m1", "m2", "bad", "big")


def _manager(metrics: WorkerPromMetrics, adapter: Adapter, **config: object) -> ModelManager:
    catalog = Catalog(
        ModelSpec(m, "fake", ("en",), ("streaming",), 16000, "fake model", {}) for m in IDS
    )
    settings: dict[str, object] = {"default_model_id": "m0", "min_residency_ms": 0}
    settings.update(config)
    return ModelManager(
        catalog,
        ModelManagerConfig(**settings),  # type: ignore[arg-type]
        AdapterOptions(),
        adapters=lambda family: adapter,
        metrics=metrics,
    )


async def test_model_loads_are_counted_by_outcome_with_load_seconds_for_good_ones() -> None:
    """ok for a load, error for an engine failure, oom for out-of-memory; load seconds only
    for the loads that worked."""
    metrics = WorkerPromMetrics(W)
    adapter = Adapter({"bad": OSError("no weights"), "big": MemoryError()})
    manager = _manager(metrics, adapter, resident_cap=3)
    await manager.start()
    with pytest.raises(ModelLoadFailed):
        await manager.load("bad")
    with pytest.raises(ModelLoadFailed):
        await manager.load("big")
    await manager.load("m1")
    await manager.load("m1")  # already resident: no second load
    await manager.close()
    for model, outcome, count in [("m0", "ok", 1), ("m1", "ok", 1), ("bad", "error", 1)]:
        assert (
            _value(metrics, "duplex_worker_model_loads_total", model=model, outcome=outcome)
            == count
        )
    assert _value(metrics, "duplex_worker_model_loads_total", model="big", outcome="oom") == 1
    assert _value(metrics, "duplex_worker_model_load_seconds_count", model="m1") == 1
    assert _value(metrics, "duplex_worker_model_load_seconds_count", model="bad") is None


async def test_residency_gauges_follow_loads_evictions_and_unloads() -> None:
    """resident_models counts ready models, model_resident is 1/0 per catalog model; an LRU
    eviction is counted, an explicit unload is not."""
    metrics = WorkerPromMetrics(W)
    manager = _manager(metrics, Adapter(), resident_cap=2)
    assert _value(metrics, "duplex_worker_model_resident", model="m1") == 0
    await manager.start()
    assert _value(metrics, "duplex_worker_resident_models") == 1
    assert _value(metrics, "duplex_worker_model_resident", model="m0") == 1
    await manager.load("m1")
    assert _value(metrics, "duplex_worker_resident_models") == 2
    await manager.load("m2")  # over the cap: m1, idle, is evicted
    assert _value(metrics, "duplex_worker_model_resident", model="m1") == 0
    assert _value(metrics, "duplex_worker_model_resident", model="m2") == 1
    assert _value(metrics, "duplex_worker_model_evictions_total", model="m1") == 1
    await manager.unload("m2")
    assert _value(metrics, "duplex_worker_model_resident", model="m2") == 0
    assert _value(metrics, "duplex_worker_resident_models") == 1
    assert _value(metrics, "duplex_worker_model_evictions_total", model="m2") is None
    with pytest.raises(ModelBusy):
        await manager.unload("m0")
    await manager.close()
    assert _value(metrics, "duplex_worker_resident_models") == 0


class OnnxVoice(Voice):
    """A voice that says which execution provider runs it, as the Piper voice does."""

    provider = "CPUExecutionProvider"


class OnnxAdapter(Adapter):
    def load(self, spec: ModelSpec, options: AdapterOptions) -> Voice:
        return OnnxVoice(spec.model_id)


async def test_the_provider_that_really_runs_a_model_is_exported_while_it_is_loaded() -> None:
    """model_provider{provider} is 1 for a loaded model's own provider and gone once the
    model is unloaded."""
    metrics = WorkerPromMetrics(W)
    manager = _manager(metrics, OnnxAdapter(), resident_cap=2)
    await manager.start()
    await manager.load("m1")
    cpu = "CPUExecutionProvider"
    assert _value(metrics, "duplex_worker_model_provider", model="m1", provider=cpu) == 1
    await manager.unload("m1")
    assert _value(metrics, "duplex_worker_model_provider", model="m1", provider=cpu) is None
    await manager.close()


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (MemoryError(), LoadOutcome.OOM),
        (RuntimeError("CUDA error: out of memory"), LoadOutcome.OOM),
        (
            RuntimeError("[ONNXRuntimeError] Failed to allocate memory for requested buffer"),
            LoadOutcome.OOM,
        ),
        (type("OutOfMemoryError", (RuntimeError,), {})("CUDA"), LoadOutcome.OOM),
        (OSError("no such file"), LoadOutcome.ERROR),
        (ValueError("bad config"), LoadOutcome.ERROR),
    ],
)
def test_load_failures_are_told_apart_as_oom_or_error(
    error: BaseException, outcome: LoadOutcome
) -> None:
    """Host and GPU out-of-memory failures are `oom` whatever engine raised them."""
    assert load_outcome(error) is outcome


# -- registry and server --------------------------------------------------------------------


def test_two_workers_in_one_process_keep_separate_registries() -> None:
    """Each worker has its own registry: same names, no clash, no shared values."""
    a, b = WorkerPromMetrics("a"), WorkerPromMetrics("b")
    a.session_opened()
    assert a.registry.get_sample_value("duplex_worker_sessions_active", {"worker": "a"}) == 1
    assert b.registry.get_sample_value("duplex_worker_sessions_active", {"worker": "b"}) == 0
    assert b.registry.get_sample_value("duplex_worker_sessions_active", {"worker": "a"}) is None


def test_every_declared_name_is_exported_and_only_bounded_labels_are_used() -> None:
    """Once each recording call ran, the exposition has every name of METRIC_NAMES, and the
    only label names are worker, model, outcome and provider (never a session id)."""
    metrics = WorkerPromMetrics(W)
    metrics.watch_queue_depth(lambda: 0)
    metrics.session_opened()
    metrics.underrun()
    metrics.clause_synthesized("m", 0.01, 0.5)
    metrics.first_frame(0.1)
    metrics.model_loaded("m", 0.5)
    metrics.model_load_failed("m", LoadOutcome.ERROR)
    metrics.model_evicted("m")
    metrics.residency("m", True, 1)
    metrics.model_provider("m", "CPUExecutionProvider")
    metrics.zero_shot_conditioning("m", "miss", 0.3)
    samples = [s for family in metrics.registry.collect() for s in family.samples]
    names = {s.name for s in samples}
    for name in METRIC_NAMES:
        assert name in names or f"{name}_count" in names, name
    labels = {key for s in samples for key in s.labels if key != "le"}
    assert labels == {"worker", "model", "outcome", "provider"}


def test_the_metrics_server_binds_only_its_address_and_stops() -> None:
    """Bound to 127.0.0.1 on a free port it serves the exposition; after stop the port
    refuses connections."""
    metrics = WorkerPromMetrics(W)
    metrics.session_opened()
    server = MetricsServer(metrics.registry, "127.0.0.1", 0)
    port = server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            body = reply.read().decode()
        assert f'duplex_worker_sessions_active{{worker="{W}"}} 1.0' in body
        assert body == generate_latest(metrics.registry).decode()
        assert server.address == ("127.0.0.1", port)
    finally:
        server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
