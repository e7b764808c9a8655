"""Load passes shared by the latency benchmarks: N concurrent clients, each speaking every
text once, against the in-process baseline, the worker over gRPC or the orchestrator."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.context import BenchContext
from bench.grpc_client import Utterance, speak_texts
from bench.procs import GRPC_OPTIONS, ManagedProcess, child_env
from bench.stats import Summary, summarize
from bench.ws_client import speak_texts_ws

BENCH_DIR = Path(__file__).resolve().parent
INPROCESS_THREADS = 1


@dataclass
class PassResult:
    """One pass: every client spoke every text once."""

    system: str
    concurrency: int
    first_audio_s: list[float]
    audio_s: float
    wall_s: float
    cpu_s: float | None = None
    peak_rss: int | None = None
    rss_after: int | None = None
    underruns: int | None = None
    # The text each first_audio_s entry belongs to (index into the texts).
    text_indices: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def first_audio(self) -> Summary:
        return summarize([x for x in self.first_audio_s if not math.isnan(x)])

    def slowest(self, k: int) -> list[tuple[int, float]]:
        """The ``k`` largest first-audio times as (text index, seconds)."""
        pairs = [(i, x) for i, x in zip(self.text_indices, self.first_audio_s, strict=True)]
        return sorted(pairs, key=lambda p: -p[1] if not math.isnan(p[1]) else -math.inf)[:k]

    @property
    def throughput(self) -> float:
        """Audio-seconds produced per wall-second."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "concurrency": self.concurrency,
            "first_audio_ms": self.first_audio.to_dict(scale=1000.0, digits=1),
            "missing_first_audio": sum(1 for x in self.first_audio_s if math.isnan(x)),
            # Every sample, for the report's distribution plots.
            "first_audio_samples_ms": [
                round(x * 1000.0, 1) for x in self.first_audio_s if not math.isnan(x)
            ],
            "audio_s": round(self.audio_s, 2),
            "wall_s": round(self.wall_s, 2),
            "audio_s_per_s": round(self.throughput, 2),
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 2),
            "peak_rss_mb": None if self.peak_rss is None else round(self.peak_rss / 2**20, 1),
            "rss_after_mb": None if self.rss_after is None else round(self.rss_after / 2**20, 1),
            "underruns": self.underruns,
            **self.extra,
        }


def indexed(texts: Sequence[str]) -> list[tuple[int, str]]:
    return list(enumerate(texts))


async def run_inprocess(
    ctx: BenchContext, concurrencies: Sequence[int], *, timeout_s: float
) -> dict[int, PassResult]:
    """The baseline in its own process (bench/piper_inprocess.py), all passes in one load."""
    texts_path = ctx.workdir / "texts.txt"
    texts_path.write_text("\n".join(ctx.bench_texts()) + "\n", encoding="utf-8")
    args = [
        sys.executable,
        str(BENCH_DIR / "piper_inprocess.py"),
        "--texts",
        str(texts_path),
        "--threads",
        str(INPROCESS_THREADS),
        "--warmups",
        str(ctx.warmups),
        "--concurrency",
        *(str(c) for c in concurrencies),
    ]
    ctx.progress(
        f"in-process Piper baseline ({INPROCESS_THREADS} onnx thread), "
        f"clients {list(concurrencies)}"
    )
    proc = await asyncio.to_thread(
        subprocess.run,
        args,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=child_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"in-process baseline failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        p["concurrency"]: PassResult(
            system="in-process",
            concurrency=p["concurrency"],
            first_audio_s=[float(x) for x in p["first_audio_s"]],
            # Each thread speaks every text in order.
            text_indices=list(range(int(data["texts"]))) * int(p["concurrency"]),
            audio_s=float(p["audio_s"]),
            wall_s=float(p["wall_s"]),
            cpu_s=float(p["cpu_s"]),
            peak_rss=int(p["peak_rss"]),
        )
        for p in data["passes"]
    }


ClientFn = Callable[[int], Awaitable[list[Utterance]]]


async def concurrent_pass(
    system: str,
    concurrency: int,
    client: ClientFn,
    *,
    process: ManagedProcess | None,
    timeout_s: float,
) -> PassResult:
    """Run ``concurrency`` clients at once; CPU and peak RSS of ``process`` over the pass."""
    if process is not None:
        process.sampler.reset_peak()
        cpu0 = process.sampler.cpu_seconds()
    start = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        per_client = await asyncio.gather(*(client(i) for i in range(concurrency)))
    wall = time.perf_counter() - start
    utterances = [u for results in per_client for u in results]
    result = PassResult(
        system=system,
        concurrency=concurrency,
        first_audio_s=[u.first_audio_s for u in utterances],
        text_indices=[u.text_index for u in utterances],
        audio_s=sum(u.audio_s for u in utterances),
        wall_s=wall,
    )
    if process is not None:
        result.cpu_s = process.sampler.cpu_seconds() - cpu0
        result.peak_rss = process.sampler.peak_rss
        result.rss_after = process.sampler.rss
    return result


async def grpc_passes(
    ctx: BenchContext,
    system: str,
    target: str,
    concurrencies: Sequence[int],
    *,
    lead_ms: int | None,
    process: ManagedProcess,
    after_pass: Callable[[PassResult, float], Awaitable[None]] | None = None,
    pass_timeout_s: float,
) -> dict[int, PassResult]:
    """Warm-ups, then one pass per concurrency against a worker over gRPC."""
    texts = indexed(ctx.bench_texts())
    results: dict[int, PassResult] = {}
    async with grpc.aio.insecure_channel(target, options=GRPC_OPTIONS) as channel:
        await speak_texts(channel, texts[: ctx.warmups], lead_ms=lead_ms)
        for concurrency in concurrencies:
            ctx.progress(f"{system}: {concurrency} client(s) x {len(texts)} texts")
            started = time.time()

            async def client(_: int) -> list[Utterance]:
                return await speak_texts(channel, texts, lead_ms=lead_ms)

            result = await concurrent_pass(
                system, concurrency, client, process=process, timeout_s=pass_timeout_s
            )
            if after_pass is not None:
                await after_pass(result, started)
            results[concurrency] = result
    return results


async def ws_passes(
    ctx: BenchContext,
    system: str,
    url: str,
    concurrencies: Sequence[int],
    *,
    process: ManagedProcess,
    pass_timeout_s: float,
) -> dict[int, PassResult]:
    """Warm-ups, then one pass per concurrency through the orchestrator's WebSocket."""
    texts = indexed(ctx.bench_texts())
    await speak_texts_ws(url, texts[: ctx.warmups])
    results: dict[int, PassResult] = {}
    for concurrency in concurrencies:
        ctx.progress(f"{system}: {concurrency} client(s) x {len(texts)} texts")
        workers: list[str] = []

        async def client(_: int, workers: list[str] = workers) -> list[Utterance]:
            session = await speak_texts_ws(url, texts)
            workers.append(session.worker)
            return session.utterances

        result = await concurrent_pass(
            system, concurrency, client, process=process, timeout_s=pass_timeout_s
        )
        result.extra["workers"] = sorted(set(workers))
        results[concurrency] = result
    return results
