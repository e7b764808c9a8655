"""Benchmark 1: first audio and throughput of one Piper worker over gRPC, beside the
in-process `PiperVoice.synthesize` call, with 1, 4 and 8 concurrent clients."""

from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path

import grpc
from duplex.devtools.redis_server import start_redis
from duplex.text import ClauseSegmenter
from duplex.worker.config import WorkerSection

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


def first_clause_chars(text: str) -> int:
    """Length of the clause the worker synthesizes first (its segmenter's first cut, at the
    worker's default ``first_clause_max_chars``)."""
    first_max = WorkerSection.__dataclass_fields__["first_clause_max_chars"].default
    segmenter = ClauseSegmenter(
        first_max_chars=(first_max or None) if isinstance(first_max, int) else None
    )
    clauses = segmenter.push(text) or segmenter.finish()
    return len(clauses[0].text.strip()) if clauses else 0


def by_text(result: PassResult) -> dict[int, float | None]:
    return {
        i: None if math.isnan(x) else round(x * 1000, 1)
        for i, x in zip(result.text_indices, result.first_audio_s, strict=True)
    }


def memory_ratios(
    paced: dict[int, PassResult], fast: dict[int, PassResult], clients: tuple[int, ...]
) -> tuple[float, float]:
    """(peak RSS at the most clients / at the next fewer, RSS after the last pass / after the
    first pass at the most clients); NaN where this run has too few passes."""
    if len(clients) < 2:
        return math.nan, math.nan
    most, fewer = paced[clients[-1]], paced[clients[-2]]
    growth = ratio(float(most.peak_rss or 0), float(fewer.peak_rss or 0))
    leak = ratio(float(fast[clients[-1]].rss_after or 0), float(most.rss_after or 0))
    return growth, leak


async def run(ctx: BenchContext, section: Section) -> None:
    clients = (1,) if ctx.quick else (1, 4, 8)
    texts = ctx.bench_texts()
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
    growth, leak = memory_ratios(paced, fast, clients)
    flat = (
        None
        if math.isnan(growth)
        else growth <= MEMORY_GROWTH_BOUND and leak <= MEMORY_GROWTH_BOUND
    )
    for c in clients:
        target = TARGET_P95_MS.get(c)
        if target is not None:
            p95 = paced[c].first_audio.p95 * 1000
            section.target(
                f"first audio p95, {c} client(s), default lead < {target:.0f} ms",
                f"{fmt(p95)} ms (in-process {fmt(baseline[c].first_audio.p95 * 1000)} ms)",
                None if math.isnan(p95) else p95 < target,
            )
    for c in clients:
        r = ratio(fast[c].throughput, baseline[c].throughput)
        section.target(
            f"throughput, {c} client(s) >= {TARGET_THROUGHPUT_RATIO:.2f} x in-process",
            f"{fmt(fast[c].throughput, 1)} vs {fmt(baseline[c].throughput, 1)} aud-s/s "
            f"({fmt(r, 2)})",
            None if math.isnan(r) else r >= TARGET_THROUGHPUT_RATIO,
        )
    section.target(
        f"memory flat with sessions (<= {MEMORY_GROWTH_BOUND} x)",
        f"peak {fmt(growth, 2)} x from 4 to 8 clients; RSS {fmt(leak, 2)} x after a second round",
        flat,
    )
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
        "Memory with sessions: peak RSS with 8 clients / with 4 clients = "
        f"{fmt(growth, 2)}; RSS after the second round of passes (lead 0, 8 clients) / after the "
        f"first (default lead, 8 clients) = {fmt(leak, 2)} ({verdict(flat)} against <= "
        f"{MEMORY_GROWTH_BOUND}). RSS does rise from 1 to 4 clients: the worker's inference "
        "threads then run at once and onnxruntime's arena keeps the peak of concurrent runs; "
        "that is bounded by the thread pool, not by sessions. The in-process baseline, one "
        f"thread per client, peaked at {fmt(mb(baseline[most].peak_rss))} MB with {most} clients.",
        "Under-runs: the increase of `metrics.underruns` in worker:{name} (Redis) over the pass.",
        "Slowest first audio with one client (default lead): "
        + "; ".join(
            f"#{i} {fmt(x * 1000)} ms ({first_clause_chars(texts[i])}-char first clause)"
            for i, x in paced[1].slowest(3)
        )
        + ". Piper's time to the first audio grows with the first clause's length.",
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
        "first_audio_ms_by_text_1_client": {
            "worker_default_lead": by_text(paced[1]),
            "in_process": by_text(baseline[1]),
        },
        "memory_peak_ratio_8_over_4_clients": None if math.isnan(growth) else round(growth, 3),
        "memory_rss_ratio_second_round": None if math.isnan(leak) else round(leak, 3),
    }
    ctx.shared[NAME] = {"in_process": baseline, "worker": paced}
