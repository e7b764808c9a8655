"""Benchmark 1: first audio and throughput of one Piper worker over gRPC, beside the
in-process `PiperVoice.synthesize` call, with 1, 4 and 8 concurrent clients."""

from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path

import grpc
from duplex.devtools.redis_server import start_redis

from bench import grpc_client
from bench.context import BenchContext
from bench.passes import INPROCESS_THREADS, PassResult, grpc_passes, run_inprocess
from bench.procs import GRPC_OPTIONS, WorkerSpec, fresh_metrics, start_worker
from bench.report import Section, fmt, verdict
from bench.stats import ratio

NAME = "worker_latency"
TITLE = "Worker: first audio over gRPC, throughput, memory (vs in-process Piper)"
PIPER_MODEL = "piper-en-joe-medium"

# The targets (p95 first audio, ms) and the throughput bound.
TARGET_P95_MS = {1: 100.0, 4: 300.0}
TARGET_THROUGHPUT_RATIO = 0.95
MEMORY_GROWTH_BOUND = 1.15  # peak RSS at the most clients / at one client, within noise


def mb(value: int | None) -> float | None:
    return None if value is None else value / 2**20


async def run(ctx: BenchContext, section: Section) -> None:
    clients = (1,) if ctx.quick else (1, 4, 8)
    pass_timeout = 60.0 if ctx.quick else 240.0
    baseline = await run_inprocess(ctx, clients, timeout_s=60.0 if ctx.quick else 300.0)

    redis = start_redis()
    worker = None
    try:
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=ctx.workdir)))
            ctx.progress("starting redis-server and a Piper worker (python -m duplex.worker)")
            worker = await start_worker(
                WorkerSpec(name="bench-piper", adapter_type="piper", default_model_id=PIPER_MODEL),
                redis.url,
                workdir,
            )
            async with grpc.aio.insecure_channel(worker.target, options=GRPC_OPTIONS) as channel:
                caps = await grpc_client.capabilities(channel)
            rss_ready = worker.managed.sampler.rss
            last_underruns: list[int] = []

            async def after_pass(result: PassResult, started: float) -> None:
                metrics = await fresh_metrics(redis.url, worker.name, started)
                if metrics is None:
                    return
                previous = last_underruns[-1] if last_underruns else 0
                result.underruns = metrics.underruns - previous
                last_underruns.append(metrics.underruns)

            # Default lead: what a live client sees; it does not delay the first frame.
            paced = await grpc_passes(
                ctx,
                "worker (default lead)",
                worker.target,
                clients,
                lead_ms=None,
                process=worker.managed,
                after_pass=after_pass,
                pass_timeout_s=pass_timeout,
            )
            # lead 0: as fast as produced, as the in-process call runs; this is throughput.
            fast = await grpc_passes(
                ctx,
                "worker (lead 0)",
                worker.target,
                clients,
                lead_ms=0,
                process=worker.managed,
                after_pass=after_pass,
                pass_timeout_s=pass_timeout,
            )
    finally:
        if worker is not None:
            worker.managed.stop()
        redis.stop()

    latency = ctx.table(
        section,
        "First audio (ms): worker over gRPC at its default lead vs in-process Piper",
        [
            "clients",
            "ours p50",
            "ours p95",
            "in-proc p50",
            "in-proc p95",
            "p95 ours/in-proc",
            "target p95",
            "verdict",
        ],
    )
    for c in clients:
        ours, base = paced[c].first_audio, baseline[c].first_audio
        target = TARGET_P95_MS.get(c)
        latency.add(
            c,
            fmt(ours.p50 * 1000),
            fmt(ours.p95 * 1000),
            fmt(base.p50 * 1000),
            fmt(base.p95 * 1000),
            fmt(ratio(ours.p95, base.p95), 2),
            "-" if target is None else f"< {target:.0f}",
            verdict(None if target is None or math.isnan(ours.p95) else ours.p95 * 1000 < target),
        )

    throughput = ctx.table(
        section,
        "Throughput (audio-s per wall-s) and first audio at lead 0 (as fast as produced)",
        [
            "clients",
            "ours aud-s/s",
            "in-proc aud-s/s",
            "ratio",
            "target",
            "verdict",
            "ours p50/p95 ms",
            "in-proc p50/p95 ms",
        ],
    )
    for c in clients:
        r = ratio(fast[c].throughput, baseline[c].throughput)
        throughput.add(
            c,
            fmt(fast[c].throughput, 1),
            fmt(baseline[c].throughput, 1),
            fmt(r, 2),
            f">= {TARGET_THROUGHPUT_RATIO:.2f}",
            verdict(None if math.isnan(r) else r >= TARGET_THROUGHPUT_RATIO),
            f"{fmt(fast[c].first_audio.p50 * 1000)}/{fmt(fast[c].first_audio.p95 * 1000)}",
            f"{fmt(baseline[c].first_audio.p50 * 1000)}/{fmt(baseline[c].first_audio.p95 * 1000)}",
        )

    memory = ctx.table(
        section,
        "Memory, CPU and under-runs per pass (worker process; in-process for comparison)",
        [
            "pass",
            "clients",
            "peak RSS MB",
            "RSS after MB",
            "CPU s",
            "under-runs",
            "in-proc peak RSS MB",
        ],
    )
    for label, runs in (("default lead", paced), ("lead 0", fast)):
        for c in clients:
            p = runs[c]
            memory.add(
                label,
                c,
                fmt(mb(p.peak_rss)),
                fmt(mb(p.rss_after)),
                fmt(p.cpu_s, 1),
                fmt(p.underruns),
                fmt(mb(baseline[c].peak_rss)),
            )

    most = clients[-1]
    peaks = [p.peak_rss for p in (*paced.values(), *fast.values()) if p.peak_rss]
    growth = ratio(float(max(peaks)), float(paced[1].peak_rss or 0)) if peaks else math.nan
    growth_verdict = verdict(None if math.isnan(growth) else growth <= MEMORY_GROWTH_BOUND)
    section.notes += [
        f"Worker: {caps.device or 'cpu'}, adapter {caps.adapter_type}, model {PIPER_MODEL}, "
        "onnx threads 1 (the config's `worker.onnx_threads`), inference threads = cores; "
        f"frames are 20 ms at 48 kHz. RSS when ready: {fmt(mb(rss_ready))} MB.",
        "In-process baseline: bench/piper_inprocess.py, its own process, one PiperVoice shared by "
        f"threads, onnxruntime {INPROCESS_THREADS} intra-op thread; first audio = first "
        "sentence chunk.",
        "Each client is one session speaking the texts one after another (the next text is sent "
        "after the previous utterance ended). First audio = text sent -> first frame received. "
        "At the default lead the worker paces frames at real time, so that pass takes as long as "
        "the audio; throughput is measured at lead 0.",
        f"Memory with sessions: the largest peak RSS over all passes is {fmt(growth, 2)} x the "
        f"peak with one client ({growth_verdict}"
        f" against <= {MEMORY_GROWTH_BOUND}); in-process peak at {most} clients: "
        f"{fmt(mb(baseline[most].peak_rss))} MB.",
        "Under-runs: the increase of `metrics.underruns` in worker:{name} (Redis) over the pass.",
    ]
    section.data = {
        "worker": {
            "device": caps.device,
            "adapter_type": caps.adapter_type,
            "model": PIPER_MODEL,
            "rss_ready_mb": mb(rss_ready),
        },
        "in_process": [baseline[c].to_dict() for c in clients],
        "worker_default_lead": [paced[c].to_dict() for c in clients],
        "worker_lead0": [fast[c].to_dict() for c in clients],
        "memory_growth_ratio": None if math.isnan(growth) else round(growth, 3),
    }
    ctx.shared[NAME] = {"in_process": baseline, "worker": paced}
