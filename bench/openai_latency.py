"""First audio through the OpenAI-compatible `POST /v1/audio/speech` (pcm, streamed, the
`openai` SDK), beside the WebSocket path, against the same orchestrator and Piper worker in
the same run, at 1 and 4 clients."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import openai
from duplex.devtools.redis_server import start_redis

from bench.context import BenchContext
from bench.grpc_client import Utterance
from bench.passes import PassResult, concurrent_pass, indexed, ws_passes
from bench.procs import ManagedProcess, WorkerSpec, start_orchestrator, start_worker
from bench.report import Section, fmt
from bench.worker_latency import PIPER_MODEL

NAME = "openai_latency"
TITLE = "OpenAI-compatible /v1/audio/speech: first audio beside the WebSocket path"
RATE = 24000  # OpenAI's pcm
TARGET_MS = 10.0


async def speak_texts_http(base_url: str, texts: Sequence[tuple[int, str]]) -> list[Utterance]:
    """One client speaking `texts` one after another, one request each (pcm, streamed)."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=60.0)
    results: list[Utterance] = []
    try:
        for index, text in texts:
            start = time.perf_counter()
            first = float("nan")
            size = 0
            async with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice=PIPER_MODEL, input=text, response_format="pcm"
            ) as response:
                async for chunk in response.iter_bytes():
                    if chunk and size == 0:
                        first = time.perf_counter() - start
                    size += len(chunk)
            audio_s = size / 2 / RATE
            results.append(
                Utterance(index, first, audio_s, round(audio_s / 0.02), time.perf_counter() - start)
            )
    finally:
        await client.close()
    return results


async def http_passes(
    ctx: BenchContext,
    base_url: str,
    concurrencies: Sequence[int],
    *,
    process: ManagedProcess,
    pass_timeout_s: float,
) -> dict[int, PassResult]:
    texts = indexed(ctx.bench_texts())
    await speak_texts_http(base_url, texts[: ctx.warmups])
    results: dict[int, PassResult] = {}
    for concurrency in concurrencies:
        ctx.progress(f"/v1/audio/speech: {concurrency} client(s) x {len(texts)} texts")

        async def client(_: int) -> list[Utterance]:
            return await speak_texts_http(base_url, texts)

        results[concurrency] = await concurrent_pass(
            "/v1/audio/speech", concurrency, client, process=process, timeout_s=pass_timeout_s
        )
    return results


async def run(ctx: BenchContext, section: Section) -> None:
    clients = (1,) if ctx.quick else (1, 4)
    pass_timeout = 60.0 if ctx.quick else 240.0
    redis = start_redis()
    stack = contextlib.ExitStack()
    try:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=ctx.workdir)))
        ctx.progress("starting redis-server, a Piper worker and the orchestrator")
        worker = await start_worker(
            WorkerSpec(name="bench-piper-openai", adapter_type="piper",
                       default_model_id=PIPER_MODEL),
            redis.url,
            workdir,
        )  # fmt: skip
        stack.callback(worker.managed.stop)
        orch = await start_orchestrator(redis.url, workdir)
        stack.callback(orch.managed.stop)
        websocket: dict[int, PassResult] = {}
        http: dict[int, PassResult] = {}
        # Alternate the two paths per concurrency, so drift in the machine's load hits both.
        for c in clients:
            websocket |= await ws_passes(
                ctx, "WebSocket", orch.ws_url, (c,), process=orch.managed,
                pass_timeout_s=pass_timeout,
            )  # fmt: skip
            http |= await http_passes(
                ctx, f"{orch.http_url}/v1", (c,), process=orch.managed,
                pass_timeout_s=pass_timeout,
            )  # fmt: skip
    finally:
        stack.close()
        redis.stop()

    columns = ["path"]
    for c in clients:
        columns += [f"c{c} p50", f"c{c} p95"]
    table = ctx.table(
        section, "First audio (ms), p50 / p95 over the texts", columns, first_width=44
    )
    for label, runs in (("WebSocket (session open, TextChunk)", websocket),
                        ("POST /v1/audio/speech, pcm streamed (SDK)", http)):  # fmt: skip
        cells: list[str] = [label]
        for c in clients:
            s = runs[c].first_audio
            cells += [fmt(s.p50 * 1000), fmt(s.p95 * 1000)]
        table.add(*cells)
    for c in clients:
        delta_p50 = (http[c].first_audio.p50 - websocket[c].first_audio.p50) * 1000
        delta_p95 = (http[c].first_audio.p95 - websocket[c].first_audio.p95) * 1000
        section.target(
            f"/v1/audio/speech first audio within {TARGET_MS:.0f} ms of WebSocket ({c} client(s))",
            f"p50 {delta_p50:+.1f} ms, p95 {delta_p95:+.1f} ms",
            delta_p50 <= TARGET_MS and delta_p95 <= TARGET_MS,
        )
    section.notes += [
        "Same orchestrator process, same Piper worker, same texts (HTTP at 24 kHz as OpenAI's "
        "pcm, WebSocket at the bench's usual 48 kHz). WebSocket: "
        "one session per client, opened before the clock starts, first audio = TextChunk sent "
        "-> first frame received. HTTP: one request per text with the openai SDK, first audio "
        "= request sent -> first non-empty body chunk, so it also pays for routing, opening "
        "the worker stream and the HTTP exchange that a WebSocket session paid once.",
        "HTTP responses are not paced by the orchestrator: the worker sends each reply's "
        "first 3 s as fast as it makes them (its lead for API sessions), the rest at real "
        "time; the WebSocket output is paced at real time with its small lead. Each client "
        "sends its next text once the last one's audio has all come, so an HTTP client, "
        "whose short replies come faster than real time, asks more often than a WebSocket "
        "one (compare the passes' wall times in results.json).",
    ]
    section.data = {
        "websocket": [websocket[c].to_dict() for c in clients],
        "openai_http": [http[c].to_dict() for c in clients],
    }
