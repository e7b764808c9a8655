"""One load step of the orchestrator capacity bench, and what is measured beside it: the
load generator in its own process (`bench.ws_load`), CPU per process, the orchestrator's
own lateness histogram, an optional py-spy profile, and first audio at low load."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.procs import OrchestratorProcess, child_env, http_get
from bench.stats import (
    fraction_at_most,
    histogram_quantile,
    inter_arrival_deviations,
    subtract_buckets,
    summarize,
)
from bench.ws_client import speak_texts_ws

FRAME_S = 0.020
JITTER_BOUND_S = 0.010
REALTIME_SHARE = 0.95  # frames received / frames a real-time stream delivers in the window
LATENESS_METRIC = "duplex_orch_frame_send_lateness_seconds"
LOAD_EXIT_S = 30.0  # the load generator's sessions close within this after the window
PROFILE_RATE_HZ = 100


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
        now: dict[str, float] = {}
        for k, p in self._procs.items():
            with contextlib.suppress(psutil.Error):
                now[k] = float(sum(p.cpu_times()[:2]))
        return now

    def mark_start(self) -> None:
        self._start = self._now()

    def mark_end(self) -> None:
        now = self._now()
        self.used = {k: now[k] - self._start.get(k, now[k]) for k in now}


def lateness_buckets(exposition: bytes) -> list[tuple[float, float]]:
    """The cumulative buckets of the orchestrator's frame send lateness histogram."""
    from prometheus_client.parser import text_string_to_metric_families

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


def py_spy() -> str | None:
    """The py-spy binary beside this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_top(raw: str, n: int = 15) -> dict[str, list[tuple[str, float]]]:
    """The top ``n`` functions of a py-spy ``--format raw`` profile, by own samples and by
    samples inclusive of callees, as (function, % of samples)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    if not total:
        return {"own": [], "inclusive": []}

    def top(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * c / total, 1)) for f, c in counter.most_common(n)]

    return {"own": top(own), "inclusive": top(inclusive)}


def _short(frame: str) -> str:
    for marker in ("site-packages/", "services/", "python3.11/", "python3.12/"):
        head, sep, tail = frame.partition(marker)
        if sep and "(" in head:
            return f"{head}{tail}"
    return frame


async def load_step(
    orch: OrchestratorProcess,
    sessions: int,
    window_s: float,
    *,
    text: str,
    model_id: str,
    workdir: Path,
    others: dict[str, psutil.Process],
    profile: bool = False,
) -> dict[str, Any]:
    """``sessions`` WebSocket sessions from the load generator process; the window starts
    once every session has had time to connect and fill its lead."""
    ramp_s = 2.0 + sessions * 0.02
    start = time.perf_counter()
    window = Window(start + ramp_s, start + ramp_s + window_s)
    out = workdir / f"load-{sessions}-{time.monotonic_ns()}.json"
    load = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.ws_load",
        "--url",
        orch.ws_url,
        "--sessions",
        str(sessions),
        "--text",
        text,
        "--model",
        model_id,
        "--until",
        repr(window.end),
        "--out",
        str(out),
        env={**child_env(), "PYTHONPATH": _bench_path()},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    procs = {
        "orchestrator": psutil.Process(orch.managed.process.pid),
        "load generator": psutil.Process(load.pid),
        **others,
    }
    meter = CpuMeter(procs)
    scrapes: list[list[tuple[float, float]]] = []
    spy: asyncio.subprocess.Process | None = None
    spy_out = workdir / f"profile-{sessions}.txt"
    try:
        await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
        scrapes.append(await scrape(orch))
        meter.mark_start()
        if profile and (binary := py_spy()) is not None:
            spy = await asyncio.create_subprocess_exec(
                binary,
                "record",
                "-p",
                str(orch.managed.process.pid),
                "-r",
                str(PROFILE_RATE_HZ),
                "-d",
                str(max(1, int(window_s) - 1)),
                "-f",
                "raw",
                "--nonblocking",
                "-o",
                str(spy_out),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
        meter.mark_end()
        scrapes.append(await scrape(orch))
        async with asyncio.timeout(LOAD_EXIT_S):
            _, stderr = await load.communicate()
    finally:
        if load.returncode is None:
            load.kill()
            await load.wait()
        if spy is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10.0):
                    await spy.wait()
            if spy.returncode is None:
                spy.kill()
                await spy.wait()
    results: list[dict[str, Any]] = (
        json.loads(out.read_text(encoding="utf-8")) if out.exists() else []
    )
    if not results:
        detail = stderr.decode("utf-8", "replace")[-500:]
        raise RuntimeError(f"the load generator wrote nothing (exit {load.returncode}): {detail}")
    # Sessions still starting when the window opened: the ramp was too short for them.
    late_starts = sum(1 for r in results if r.get("started", 0.0) > window.start)
    arrivals: list[list[float] | BaseException] = []
    workers: dict[str, int] = {}
    errors: list[str] = []
    for r in results:
        if "error" in r:
            arrivals.append(RuntimeError(r["error"]))
            errors.append(str(r["error"]))
        else:
            workers[r["worker"]] = workers.get(r["worker"], 0) + 1
            arrivals.append(list(r["arrivals"]))
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
    cpu = {k: round(v / window_s * 100, 1) for k, v in meter.used.items()}
    # CPU per frame delivered: steadier than lateness on a machine others load too.
    orch_us = meter.used.get("orchestrator", math.nan) / max(1, stats.frames) * 1e6
    row: dict[str, Any] = {
        "sessions": sessions,
        "send_lateness_p99_ms": None if math.isnan(p99) else round(p99 * 1000, 2),
        "share_within_10ms": None if math.isnan(within) else round(within, 4),
        "client_jitter_p99_ms": None
        if math.isnan(stats.jitter_p99_s)
        else round(stats.jitter_p99_s * 1000, 2),
        "received_share": round(stats.share, 4),
        "worst_session_share": round(stats.worst_share, 4),
        "orchestrator_cpu_percent": cpu.get("orchestrator", math.nan),
        "client_cpu_percent": cpu.get("load generator", math.nan),
        "cpu_percent": cpu,
        "orchestrator_us_per_frame": None if math.isnan(orch_us) else round(orch_us, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "failed": stats.failed,
        "started_in_window": late_starts,
        "errors": errors[:3],
        "workers": workers,
        "held": held,
    }
    if spy is not None and spy_out.exists():
        row["profile"] = profile_top(spy_out.read_text(encoding="utf-8"))
    return row


def _bench_path() -> str:
    """PYTHONPATH for `python -m bench.ws_load`: the repository root first."""
    root = str(Path(__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH", "")
    return f"{root}{os.pathsep}{rest}" if rest else root


async def first_audio(url: str, texts: Sequence[str], clients: int, model_id: str) -> list[float]:
    """First-audio seconds of every text, ``clients`` sessions at once, each speaking all
    ``texts`` one after another."""
    indexed = list(enumerate(texts))
    results = await asyncio.gather(
        *(speak_texts_ws(url, indexed, model_id=model_id) for _ in range(clients))
    )
    return [u.first_audio_s for r in results for u in r.utterances]
