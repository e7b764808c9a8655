"""Soak: many sessions for a long while; the orchestrator's memory must stay flat, no errors.

50 WebSocket clients (10 with --quick) each open a session, speak three texts, end it and
start again, for 10 minutes (30 s with --quick), against two `tone` workers and the
orchestrator as real processes. `BENCH_SOAK_SECONDS` shortens (or lengthens) the run.

The orchestrator's and workers' RSS is sampled every second. Python's cycle collector frees
each ended session in batches, so RSS is a sawtooth, and a figure taken at one instant
compares a trough with a peak at random. Growth is therefore measured like with like: the
first window after a warm-up (a tenth of the run) against the last window (a fifth of the run
each), by their lowest samples (what stays allocated) and by their medians. The verdict uses
the larger of the two; the raw figure (one sample at the end of the warm-up, one at the end)
is shown beside them. The figures of the last fault suite (`make test-faults` / `make test`,
out/faults/figures.json) are added.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from duplex.devtools.redis_server import start_redis

from bench.context import BenchContext
from bench.procs import WorkerSpec, start_orchestrator, start_worker
from bench.report import REPO, Section, fmt
from bench.ws_client import speak_texts_ws

NAME = "soak"
TITLE = "Soak: sessions for minutes, memory growth and errors; the fault suite's figures"

SESSIONS, QUICK_SESSIONS = 50, 10
DURATION_S, QUICK_DURATION_S = 600.0, 30.0
GROWTH_TARGET = 0.05
DURATION_ENV = "BENCH_SOAK_SECONDS"
SAMPLE_EVERY_S = 1.0
TONE_MODEL = "tone-fast"
FAULT_FIGURES = REPO / "out" / "faults" / "figures.json"


async def _client(url: str, texts: tuple[str, ...], until: float, tally: dict[str, Any]) -> None:
    """Sessions one after another until ``until``; each speaks three texts."""
    turn = 0
    while time.monotonic() < until:
        batch = [(i, texts[(turn + i) % len(texts)]) for i in range(3)]
        turn += 3
        try:
            result = await speak_texts_ws(url, batch, model_id=TONE_MODEL)
        except Exception as exc:  # an error is a figure here, not the end of the soak
            tally["errors"] += 1
            tally["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
            await asyncio.sleep(0.5)
            continue
        tally["sessions"] += 1
        tally["utterances"] += len(result.utterances)
        tally["audio_s"] += sum(u.audio_s for u in result.utterances)


async def run(ctx: BenchContext, section: Section) -> None:
    sessions = QUICK_SESSIONS if ctx.quick else SESSIONS
    duration = float(
        os.environ.get(DURATION_ENV) or (QUICK_DURATION_S if ctx.quick else DURATION_S)
    )
    redis = start_redis()
    try:
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            workdir = Path(tmp)
            ctx.progress("starting two tone workers and the orchestrator")
            workers = [
                await start_worker(WorkerSpec(n, "tone", TONE_MODEL), redis.url, workdir)
                for n in ("soak-1", "soak-2")
            ]
            orch = await start_orchestrator(redis.url, workdir)
            try:
                figures = await _soak(ctx, orch.ws_url, sessions, duration, orch, workers)
            finally:
                orch.managed.stop()
                for w in workers:
                    w.managed.stop()
    finally:
        redis.stop()
    _report(ctx, section, figures)
    _fault_figures(ctx, section)


async def _soak(
    ctx: BenchContext, url: str, sessions: int, duration: float, orch: Any, workers: list[Any]
) -> dict[str, Any]:
    tally: dict[str, Any] = {"sessions": 0, "utterances": 0, "audio_s": 0.0, "errors": 0}
    samplers = {"orchestrator": orch.managed.sampler}
    samplers |= {w.name: w.managed.sampler for w in workers}
    series: dict[str, list[tuple[float, int]]] = {name: [] for name in samplers}
    began = time.monotonic()
    until = began + duration
    clients = [
        asyncio.create_task(_client(url, ctx.bench_texts(), until, tally)) for _ in range(sessions)
    ]
    shown = began
    try:
        while time.monotonic() < until:
            await asyncio.sleep(min(SAMPLE_EVERY_S, max(0.05, until - time.monotonic())))
            now = time.monotonic()
            for name, sampler in samplers.items():
                series[name].append((now - began, sampler.rss))
            if now - shown >= 10.0:
                shown = now
                ctx.progress(
                    f"{sessions} clients, {now - began:.0f}/{duration:.0f} s: "
                    f"{tally['sessions']} sessions, {tally['errors']} errors, orchestrator "
                    f"RSS {orch.managed.sampler.rss / 2**20:.0f} MiB"
                )
        async with asyncio.timeout(60):
            await asyncio.gather(*clients)
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    return {
        "clients": sessions,
        "duration_s": duration,
        **tally,
        "memory": {name: growth_figures(points, duration) for name, points in series.items()},
        # Every 5th sample of the orchestrator (t s, RSS bytes): enough to plot the sawtooth.
        "orchestrator_rss": series["orchestrator"][::5],
        "cpu_s": orch.managed.sampler.cpu_seconds(),
    }


def growth_figures(points: list[tuple[float, int]], duration: float) -> dict[str, Any]:
    """RSS growth over the soak from (t, rss) samples: raw (end of warm-up -> last sample),
    and like with like: the first window after the warm-up against the last window, by their
    lowest samples and by their medians. ``growth`` (the verdict's) is the larger of those two."""
    warm, window = duration / 10, duration / 5
    after = [rss for t, rss in points if t >= warm]
    first = [rss for t, rss in points if warm <= t < warm + window]
    last = [rss for t, rss in points if t >= duration - window]
    if not (after and first and last):
        return {"growth": None}

    def rel(new: float, old: float) -> float:
        return (new - old) / old

    low = rel(min(last), min(first))
    median = rel(statistics.median(last), statistics.median(first))
    return {
        "baseline": after[0],
        "final": after[-1],
        "raw": rel(after[-1], after[0]),
        "first_low": min(first),
        "last_low": min(last),
        "low": low,
        "first_median": statistics.median(first),
        "last_median": statistics.median(last),
        "median": median,
        "first_high": max(first),
        "last_high": max(last),
        "high": rel(max(last), max(first)),
        "growth": max(low, median),
    }


def _report(ctx: BenchContext, section: Section, f: dict[str, Any]) -> None:
    def mib(value: float | None) -> str:
        return fmt(None if value is None else value / 2**20, 1)

    def pct(value: float | None) -> str:
        return fmt(None if value is None else value * 100, 2)

    table = ctx.table(
        section, "Memory over the soak (RSS MiB; first window after warm-up -> last window, "
        "each a fifth of the run; raw: end of warm-up -> end)", ["process", "low", "median",
        "high", "raw", "growth: low %", "median %", "high %", "raw %"], first_width=12,
    )  # fmt: skip
    for name, m in f["memory"].items():
        if m.get("growth") is None:
            table.add(name, *["-"] * 8)
            continue
        table.add(
            name,
            f"{mib(m['first_low'])} -> {mib(m['last_low'])}",
            f"{mib(m['first_median'])} -> {mib(m['last_median'])}",
            f"{mib(m['first_high'])} -> {mib(m['last_high'])}",
            f"{mib(m['baseline'])} -> {mib(m['final'])}",
            pct(m["low"]),
            pct(m["median"]),
            pct(m["high"]),
            pct(m["raw"]),
        )
    orch = f["memory"].get("orchestrator", {})
    growth = orch.get("growth")
    section.target(
        f"{f['clients']} sessions for {f['duration_s'] / 60:.1f} min: orchestrator memory "
        f"growth < {GROWTH_TARGET:.0%} and zero errors",
        f"growth {pct(growth)}% (the larger of low-envelope {pct(orch.get('low'))}% and median "
        f"{pct(orch.get('median'))}%; raw {pct(orch.get('raw'))}%), {f['errors']} errors, "
        f"{f['sessions']} sessions, {f['utterances']} utterances, {f['audio_s']:.0f} s of audio",
        None if growth is None else growth < GROWTH_TARGET and f["errors"] == 0,
    )
    if f.get("last_error"):
        section.notes.append(f"last soak error: {f['last_error']}")
    section.data = {"soak": f}


def _fault_figures(ctx: BenchContext, section: Section) -> None:
    """The last fault suite's figures (measured by tests/faults, not by this run)."""
    try:
        report = json.loads(FAULT_FIGURES.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        section.notes.append(
            "no fault suite figures: run `make test-faults` (or `make test`) first"
        )
        return
    table = ctx.table(
        section, f"Fault suite figures ({report.get('form', '?')} form, from the last run of "
        "tests/faults)", ["test", "figures"], first_width=40,
    )  # fmt: skip
    for test, values in sorted(report.get("tests", {}).items()):
        shown = ", ".join(f"{k}={v}" for k, v in values.items() if k != "heard")
        table.add(test, shown)
    section.data = {**section.data, "faults": report}
