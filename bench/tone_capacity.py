"""Benchmark 4: capacity with the synthetic `tone` voice.

(a) one tone worker with 100 concurrent gRPC streams at real-time pacing: frames per second
    and CPU per stream; (b) how many concurrent WebSocket sessions one orchestrator process
    holds at real-time pacing (two tone workers behind it) while the p99 frame send lateness
    stays <= 10 ms, stepping the session count up until a step misses.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil
from duplex.devtools.redis_server import start_redis
from prometheus_client.parser import text_string_to_metric_families

from bench.context import BenchContext
from bench.grpc_client import stream_arrivals
from bench.procs import (
    GRPC_OPTIONS,
    ManagedProcess,
    OrchestratorProcess,
    WorkerSpec,
    fresh_metrics,
    http_get,
    start_orchestrator,
    start_worker,
)
from bench.report import Section, fmt, verdict
from bench.stats import (
    fraction_at_most,
    histogram_quantile,
    inter_arrival_deviations,
    subtract_buckets,
    summarize,
)
from bench.ws_client import stream_arrivals_ws

NAME = "tone_capacity"
TITLE = "Capacity with the tone voice: one worker's streams, one orchestrator's sessions"
TONE_MODEL = "tone-fast"  # synthesis costs ~nothing: what is measured is framing, pacing, I/O
FRAME_S = 0.020
# 60 ms of tone per character: ~18 s of audio, longer than any ramp + window below.
TONE_TEXT = "This is a steady test tone. " * 11
JITTER_BOUND_S = 0.010
REALTIME_SHARE = 0.95  # frames received / frames a real-time stream delivers in the window
LATENESS_METRIC = "duplex_orch_frame_send_lateness_seconds"

T = TypeVar("T")


@dataclass(frozen=True)
class Window:
    """The measured part of a load step, in time.perf_counter() seconds."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def frames(self, arrivals: Sequence[float]) -> list[float]:
        return [t for t in arrivals if self.start <= t < self.end]


@dataclass(frozen=True)
class StreamStats:
    streams: int
    failed: int
    frames: int
    expected: float
    jitter_p99_s: float
    worst_share: float

    @property
    def share(self) -> float:
        return self.frames / self.expected if self.expected else math.nan


def stream_stats(results: Sequence[list[float] | BaseException], window: Window) -> StreamStats:
    """Frames inside the window, per stream and in all, and the client-side jitter
    (|inter-arrival - 20 ms|) over every stream's frames in the window."""
    deviations: list[float] = []
    frames = 0
    failed = 0
    worst = math.inf
    expected_each = window.seconds / FRAME_S
    for result in results:
        if isinstance(result, BaseException):
            failed += 1
            worst = 0.0
            continue
        inside = window.frames(result)
        frames += len(inside)
        worst = min(worst, len(inside) / expected_each)
        deviations += inter_arrival_deviations(inside, FRAME_S)
    return StreamStats(
        streams=len(results),
        failed=failed,
        frames=frames,
        expected=expected_each * len(results),
        jitter_p99_s=summarize(deviations).p99,
        worst_share=0.0 if math.isinf(worst) else worst,
    )


class CpuMeter:
    """CPU seconds of some processes between two marks."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self._procs = processes
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {k: float(sum(p.cpu_times()[:2])) for k, p in self._procs.items()}

    def mark_start(self) -> None:
        self._start = self._now()

    def mark_end(self) -> None:
        now = self._now()
        self.used = {k: now[k] - self._start.get(k, now[k]) for k in now}


Mark = Callable[[], Awaitable[None]]


async def in_window(window: Window, at_start: Mark, at_end: Mark) -> None:
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    await at_start()
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    await at_end()


async def measured(
    window: Window, at_start: Mark, at_end: Mark, clients: Sequence[Coroutine[Any, Any, T]]
) -> list[T | BaseException]:
    """Run every client at once (a failing one is returned as its exception), with the
    window's marks taken on time beside them."""

    async def all_clients() -> list[T | BaseException]:
        return await asyncio.gather(*clients, return_exceptions=True)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(in_window(window, at_start, at_end))
        results = tg.create_task(all_clients())
    return results.result()


async def worker_streams(
    ctx: BenchContext, section: Section, redis_url: str, workdir: Path
) -> dict[str, Any]:
    streams = 10 if ctx.quick else 100
    window_s = 3.0 if ctx.quick else 10.0
    ramp_s = 2.0
    ctx.progress(
        f"tone worker: {streams} gRPC streams, {window_s:.0f} s window after a {ramp_s:.0f} s ramp"
    )
    worker = await start_worker(
        WorkerSpec(name="bench-tone", adapter_type="tone", default_model_id=TONE_MODEL),
        redis_url,
        workdir,
    )
    try:
        before = await fresh_metrics(redis_url, worker.name, time.time())
        start = time.perf_counter()
        window = Window(start + ramp_s, start + ramp_s + window_s)
        meter = CpuMeter(
            {"worker": psutil.Process(worker.managed.process.pid), "client": psutil.Process()}
        )

        async def mark_start() -> None:
            meter.mark_start()

        async def mark_end() -> None:
            meter.mark_end()

        async with grpc.aio.insecure_channel(worker.target, options=GRPC_OPTIONS) as channel:
            results = await measured(
                window,
                mark_start,
                mark_end,
                [
                    stream_arrivals(channel, TONE_TEXT, model_id=TONE_MODEL, until=window.end)
                    for _ in range(streams)
                ],
            )
        stats = stream_stats(results, window)
        after = await fresh_metrics(redis_url, worker.name, time.time())
    finally:
        worker.managed.stop()
    worker_cpu = meter.used.get("worker", math.nan) / window_s
    client_cpu = meter.used.get("client", math.nan) / window_s
    underruns = None if before is None or after is None else after.underruns - before.underruns
    table = ctx.table(
        section,
        f"(a) One tone worker ({TONE_MODEL}), {streams} concurrent gRPC streams, real-time pacing",
        [
            "streams",
            "frames/s",
            "per stream",
            "received/expected",
            "worker CPU %",
            "CPU % per stream",
            "client p99 jitter ms",
            "under-runs",
            "failed",
            "client CPU %",
        ],
    )
    table.add(
        streams,
        fmt(stats.frames / window_s),
        fmt(stats.frames / window_s / streams, 1),
        fmt(stats.share, 3),
        fmt(worker_cpu * 100),
        fmt(worker_cpu * 100 / streams, 2),
        fmt(stats.jitter_p99_s * 1000, 1),
        fmt(underruns),
        stats.failed,
        fmt(client_cpu * 100),
    )
    return {
        "streams": streams,
        "window_s": window_s,
        "frames_per_s": round(stats.frames / window_s, 1),
        "received_share": round(stats.share, 4),
        "worst_stream_share": round(stats.worst_share, 4),
        "worker_cpu_percent": round(worker_cpu * 100, 1),
        "cpu_percent_per_stream": round(worker_cpu * 100 / streams, 3),
        "client_cpu_percent": round(client_cpu * 100, 1),
        "client_jitter_p99_ms": None
        if math.isnan(stats.jitter_p99_s)
        else round(stats.jitter_p99_s * 1000, 2),
        "underruns": underruns,
        "failed": stats.failed,
    }


def lateness_buckets(exposition: bytes) -> list[tuple[float, float]]:
    """The cumulative buckets of the orchestrator's frame send lateness histogram."""
    for family in text_string_to_metric_families(exposition.decode("utf-8")):
        if family.name == LATENESS_METRIC:
            return [
                (float(s.labels["le"]), float(s.value))
                for s in family.samples
                if s.name.endswith("_bucket")
            ]
    return []


async def scrape(orch: OrchestratorProcess) -> list[tuple[float, float]]:
    status, body = await asyncio.to_thread(http_get, f"{orch.http_url}/metrics", 5.0)
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    return lateness_buckets(body)


async def orchestrator_step(
    orch: OrchestratorProcess, managed: ManagedProcess, sessions: int, window_s: float
) -> dict[str, Any]:
    ramp_s = 2.0 + sessions * 0.02
    start = time.perf_counter()
    window = Window(start + ramp_s, start + ramp_s + window_s)
    meter = CpuMeter(
        {"orchestrator": psutil.Process(managed.process.pid), "client": psutil.Process()}
    )
    scrapes: list[list[tuple[float, float]]] = []

    async def mark_start() -> None:
        scrapes.append(await scrape(orch))
        meter.mark_start()

    async def mark_end() -> None:
        meter.mark_end()
        scrapes.append(await scrape(orch))

    results = await measured(
        window,
        mark_start,
        mark_end,
        [
            stream_arrivals_ws(orch.ws_url, TONE_TEXT, model_id=TONE_MODEL, until=window.end)
            for _ in range(sessions)
        ],
    )
    arrivals: list[list[float] | BaseException] = []
    workers: dict[str, int] = {}
    errors: list[str] = []
    for r in results:
        if isinstance(r, BaseException):
            arrivals.append(r)
            errors.append(f"{type(r).__name__}: {r}")
        else:
            worker, times = r
            workers[worker] = workers.get(worker, 0) + 1
            arrivals.append(times)
    stats = stream_stats(arrivals, window)
    buckets = subtract_buckets(scrapes[1], scrapes[0]) if len(scrapes) == 2 and scrapes[1] else []
    within = fraction_at_most(buckets, JITTER_BOUND_S) if buckets else math.nan
    p99 = histogram_quantile(buckets, 0.99) if buckets else math.nan
    held = (
        not math.isnan(within)
        and within >= 0.99
        and stats.share >= REALTIME_SHARE
        and stats.failed == 0
    )
    return {
        "sessions": sessions,
        "send_lateness_p99_ms": None if math.isnan(p99) else round(p99 * 1000, 2),
        "share_within_10ms": None if math.isnan(within) else round(within, 4),
        "client_jitter_p99_ms": None
        if math.isnan(stats.jitter_p99_s)
        else round(stats.jitter_p99_s * 1000, 2),
        "received_share": round(stats.share, 4),
        "worst_session_share": round(stats.worst_share, 4),
        "orchestrator_cpu_percent": round(
            meter.used.get("orchestrator", math.nan) / window_s * 100, 1
        ),
        "client_cpu_percent": round(meter.used.get("client", math.nan) / window_s * 100, 1),
        "failed": stats.failed,
        "errors": errors[:3],
        "workers": workers,
        "held": held,
    }


async def orchestrator_sessions(
    ctx: BenchContext, section: Section, redis_url: str, workdir: Path
) -> dict[str, Any]:
    steps = (5,) if ctx.quick else (10, 25, 50, 75, 100, 150, 200)
    window_s = 3.0 if ctx.quick else 8.0
    ctx.progress("starting two tone workers and the orchestrator")
    stack = contextlib.ExitStack()
    rows: list[dict[str, Any]] = []
    try:
        for i in range(2):
            w = await start_worker(
                WorkerSpec(
                    name=f"bench-tone-{i}", adapter_type="tone", default_model_id=TONE_MODEL
                ),
                redis_url,
                workdir,
            )
            stack.callback(w.managed.stop)
        orch = await start_orchestrator(redis_url, workdir, max_connections=max(steps) + 50)
        stack.callback(orch.managed.stop)
        table = ctx.table(
            section,
            f"(b) One orchestrator, two {TONE_MODEL} workers: sessions held at real time "
            "with p99 send lateness <= 10 ms",
            [
                "sessions",
                "send lateness p99 ms",
                "share <= 10 ms",
                "client p99 jitter ms",
                "received/expected",
                "orch CPU %",
                "client CPU %",
                "failed",
                "verdict",
            ],
        )
        for sessions in steps:
            ctx.progress(f"orchestrator: {sessions} sessions, {window_s:.0f} s window")
            row = await orchestrator_step(orch, orch.managed, sessions, window_s)
            rows.append(row)
            table.add(
                sessions,
                fmt(row["send_lateness_p99_ms"], 1),
                fmt(row["share_within_10ms"], 3),
                fmt(row["client_jitter_p99_ms"], 1),
                fmt(row["received_share"], 3),
                fmt(row["orchestrator_cpu_percent"]),
                fmt(row["client_cpu_percent"]),
                row["failed"],
                verdict(row["held"]),
            )
            if not row["held"]:
                break
            await asyncio.sleep(1.0)  # let the sessions close before the next step
    finally:
        stack.close()
    passing = [r["sessions"] for r in rows if r["held"]]
    return {"steps": rows, "largest_held": max(passing) if passing else 0, "window_s": window_s}


async def run(ctx: BenchContext, section: Section) -> None:
    redis = start_redis()
    try:
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            workdir = Path(tmp)
            streams = await worker_streams(ctx, section, redis.url, workdir)
            orch = await orchestrator_sessions(ctx, section, redis.url, workdir)
    finally:
        redis.stop()
    largest = orch["largest_held"]
    missed = [r for r in orch["steps"] if not r["held"]]
    section.target(
        f"{streams['streams']} gRPC streams on one tone worker at real time",
        f"{streams['frames_per_s']:.0f} frames/s, {streams['cpu_percent_per_stream']}% CPU per "
        f"stream, {streams['received_share']:.3f} of real-time frames",
        streams["failed"] == 0 and streams["received_share"] >= REALTIME_SHARE,
    )
    section.target(
        "orchestrator sessions at real time with p99 send lateness <= 10 ms",
        f"largest step held: {largest}"
        + (
            f" (at {missed[0]['sessions']}: p99 {fmt(missed[0]['send_lateness_p99_ms'], 1)} ms)"
            if missed
            else " (every step held)"
        ),
        largest > 0,
    )
    section.notes += [
        f"Tone model {TONE_MODEL} (real-time factor 0: synthesis costs nothing), so these figures "
        "are the cost of sessions, framing, pacing and transport. Every stream speaks an ~18 s "
        "utterance; only frames inside the window (after the ramp) count.",
        f"(a) CPU % is of one core: {streams['cpu_percent_per_stream']}% per stream; the client "
        "(this bench process) shares the 2 cores with the worker.",
        f"(b) A step holds when the orchestrator's own `{LATENESS_METRIC}` shows >= 99% of the "
        f"window's frames sent within 10 ms of their real-time deadline (p99 <= 10 ms), clients "
        f"received >= {REALTIME_SHARE:.0%} of the real-time frame count, and no session failed. "
        "Client-side jitter (|inter-arrival - 20 ms|, p99) is shown beside it: it includes the "
        "bench client's own scheduling on the same 2 cores. Steps stop at the first miss.",
        f"Largest step held: {largest} sessions." if largest else "No step held.",
    ]
    section.data = {"worker_streams": streams, "orchestrator": orch}
