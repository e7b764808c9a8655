"""Soak: many sessions for a long while; the orchestrator's memory must stay flat, no errors.

50 WebSocket clients (10 with --quick) each open a session, speak three texts, end it and
start again, for 10 minutes (30 s with --quick), against two `tone` workers and the
orchestrator as real processes. The orchestrator's and workers' RSS is sampled; growth is
measured from the end of a warm-up (a tenth of the run) to the end. The figures of the
last fault suite (`make test-faults` / `make test`, out/faults/figures.json) are added.
"""

from __future__ import annotations

import asyncio
import json
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
    duration = QUICK_DURATION_S if ctx.quick else DURATION_S
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
    began = time.monotonic()
    until = began + duration
    clients = [
        asyncio.create_task(_client(url, ctx.bench_texts(), until, tally)) for _ in range(sessions)
    ]
    warm_until = began + duration / 10
    baseline: dict[str, int] = {}
    try:
        while time.monotonic() < until:
            await asyncio.sleep(min(5.0, max(0.1, until - time.monotonic())))
            if not baseline and time.monotonic() >= warm_until:
                baseline = {"orchestrator": orch.managed.sampler.rss}
                baseline |= {w.name: w.managed.sampler.rss for w in workers}
            ctx.progress(
                f"{sessions} clients, {time.monotonic() - began:.0f}/{duration:.0f} s: "
                f"{tally['sessions']} sessions, {tally['errors']} errors, orchestrator RSS "
                f"{orch.managed.sampler.rss / 2**20:.0f} MiB"
            )
        async with asyncio.timeout(60):
            await asyncio.gather(*clients)
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    final = {"orchestrator": orch.managed.sampler.rss}
    final |= {w.name: w.managed.sampler.rss for w in workers}
    growth = {k: (final[k] - baseline[k]) / baseline[k] for k in final if baseline.get(k)}
    return {
        "clients": sessions,
        "duration_s": duration,
        **tally,
        "rss_baseline": baseline,
        "rss_final": final,
        "growth": growth,
        "cpu_s": orch.managed.sampler.cpu_seconds(),
    }


def _report(ctx: BenchContext, section: Section, f: dict[str, Any]) -> None:
    table = ctx.table(
        section, "Memory over the soak (RSS after warm-up -> at the end)", ["process",
        "baseline MiB", "final MiB", "growth %"], first_width=12,
    )  # fmt: skip
    for name, final in f["rss_final"].items():
        base = f["rss_baseline"].get(name)
        growth = f["growth"].get(name)
        table.add(
            name,
            fmt(base / 2**20, 1) if base else "-",
            fmt(final / 2**20, 1),
            fmt(growth * 100, 2) if growth is not None else "-",
        )
    orch_growth = f["growth"].get("orchestrator")
    section.target(
        f"{f['clients']} sessions for {f['duration_s'] / 60:.1f} min: orchestrator memory "
        f"growth < {GROWTH_TARGET:.0%} and zero errors",
        f"growth {fmt(None if orch_growth is None else orch_growth * 100, 2)}%, "
        f"{f['errors']} errors, {f['sessions']} sessions, {f['utterances']} utterances, "
        f"{f['audio_s']:.0f} s of audio",
        None if orch_growth is None else orch_growth < GROWTH_TARGET and f["errors"] == 0,
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
