"""Benchmark 2: first audio through the whole path (WebSocket client -> orchestrator ->
worker -> client), beside the worker alone over gRPC and in-process Piper."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from duplex.devtools.redis_server import start_redis

from bench.context import BenchContext
from bench.passes import PassResult, grpc_passes, run_inprocess, ws_passes
from bench.procs import WorkerSpec, start_orchestrator, start_worker
from bench.report import Section, fmt
from bench.stats import ratio
from bench.worker_latency import NAME as WORKER_BENCH
from bench.worker_latency import PIPER_MODEL, mb

NAME = "orchestrator_latency"
TITLE = "Orchestrator: first audio through the whole path (vs worker alone, in-process)"


async def run(ctx: BenchContext, section: Section) -> None:
    clients = (1,) if ctx.quick else (1, 4)
    pass_timeout = 60.0 if ctx.quick else 240.0
    reused = ctx.shared.get(WORKER_BENCH)
    baseline: dict[int, PassResult]
    alone: dict[int, PassResult] | None = None
    if reused is not None:
        baseline, alone = reused["in_process"], reused["worker"]
        ctx.progress("reusing this run's in-process and worker-alone figures from worker_latency")
    else:
        baseline = await run_inprocess(ctx, clients, timeout_s=60.0 if ctx.quick else 300.0)

    redis = start_redis()
    stack = contextlib.ExitStack()
    try:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=ctx.workdir)))
        ctx.progress("starting redis-server, a Piper worker and the orchestrator")
        worker = await start_worker(
            WorkerSpec(name="bench-piper-orch", adapter_type="piper", default_model_id=PIPER_MODEL),
            redis.url,
            workdir,
        )
        stack.callback(worker.managed.stop)
        if alone is None:
            alone = await grpc_passes(
                ctx,
                "worker alone (gRPC)",
                worker.target,
                clients,
                lead_ms=None,
                process=worker.managed,
                pass_timeout_s=pass_timeout,
            )
        orch = await start_orchestrator(redis.url, workdir)
        stack.callback(orch.managed.stop)
        through = await ws_passes(
            ctx,
            "orchestrator (WebSocket)",
            orch.ws_url,
            clients,
            process=orch.managed,
            pass_timeout_s=pass_timeout,
        )
    finally:
        stack.close()
        redis.stop()

    columns = ["path"]
    for c in clients:
        columns += [f"c{c} p50", f"c{c} p95"]
    table = ctx.table(
        section, "First audio (ms), p50 / p95 over the texts", columns, first_width=44
    )
    rows = (
        ("in-process PiperVoice.synthesize", baseline),
        ("worker alone over gRPC", alone),
        ("client -> orchestrator -> worker (WebSocket)", through),
    )
    for label, runs in rows:
        cells: list[str] = [label]
        for c in clients:
            s = runs[c].first_audio
            cells += [fmt(s.p50 * 1000), fmt(s.p95 * 1000)]
        table.add(*cells)

    overhead = ctx.table(
        section,
        "What the orchestrator adds (ms) and costs",
        [
            "clients",
            "p50 +ms",
            "p95 +ms",
            "p95 ratio to worker alone",
            "orch CPU s / audio s",
            "orch peak RSS MB",
            "workers used",
        ],
    )
    for c in clients:
        o, w = through[c], alone[c]
        cpu_per_audio = (o.cpu_s or 0.0) / o.audio_s if o.audio_s else float("nan")
        overhead.add(
            c,
            fmt((o.first_audio.p50 - w.first_audio.p50) * 1000, 1),
            fmt((o.first_audio.p95 - w.first_audio.p95) * 1000, 1),
            fmt(ratio(o.first_audio.p95, w.first_audio.p95), 2),
            fmt(cpu_per_audio, 3),
            fmt(mb(o.peak_rss)),
            ", ".join(o.extra.get("workers", [])),
        )
    section.notes += [
        "Same texts, same client shape on every path: each client is one session speaking the "
        "texts one after another; first audio = text sent -> first audio frame received.",
        "The orchestrator paces output at real time with its small lead and asks the worker for "
        "its own lead; in-process Piper and the worker alone at its default lead are the "
        "references. "
        + (
            "The worker-alone and in-process figures are this run's worker_latency passes "
            "(a separate worker process with the same configuration)."
            if reused is not None
            else "All three were measured here, against the same worker process."
        ),
    ]
    section.data = {
        "in_process": [baseline[c].to_dict() for c in clients],
        "worker_alone": [alone[c].to_dict() for c in clients],
        "orchestrator": [through[c].to_dict() for c in clients],
        "reused_worker_latency": reused is not None,
    }
