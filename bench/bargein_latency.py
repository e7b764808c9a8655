"""Benchmark 5: barge-in latency in its parts, over the WebSocket and over WebRTC.

A tone worker (real-time factor 0) speaks a long utterance through the orchestrator; once the
client has heard 0.5 s of it, the client's mic plays 200 ms of silence and then real Piper
speech, so the speech onset is known to the sample (the first speech sample starts a frame).
Per run, one session: the orchestrator's own figures come from its histograms
(`duplex_orch_barge_in_detect_seconds`, `..._cut_seconds`): one observation per run, read
exactly as the change of the histogram's `_sum` between two scrapes. The client times the
same path end to end with its own clock. Runs alternate between the transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from duplex.audio.frames import frame_samples
from duplex.devtools.redis_server import start_redis
from duplex.orchestrator.config import BargeInConfig, VadConfig
from prometheus_client.parser import text_string_to_metric_families

from bench.context import BenchContext
from bench.procs import OrchestratorProcess, WorkerSpec, http_get, start_worker
from bench.report import Section, fmt, verdict
from bench.rtc_client import (
    RTC_RATE,
    RtcSession,
    Session,
    WsSession,
    end,
    start_rtc_orchestrator,
)
from bench.stats import summarize
from bench.worker_latency import PIPER_MODEL

NAME = "bargein_latency"
TITLE = "Barge-in latency in its parts: WebSocket and WebRTC (tone voice, Piper speech as mic)"
TONE_MODEL = "tone-fast"
# One long clause of tone (60 ms a character): far longer than any run.
VOICE_TEXT = "one two three four five six seven eight nine ten " * 4
MIC_TEXT = "Wait a moment, I would like to ask you something about that."
LEAD_SILENCE_MS = 200
HEARD_FRAMES = 25  # the client hears 0.5 s of the voice before the user speaks
SETTLE_S = 0.4  # after AudioEnd: what aiortc's receive jitter buffer still holds arrives
RUN_LIMIT_S = 15.0
DETECT = "duplex_orch_barge_in_detect_seconds"
CUT = "duplex_orch_barge_in_cut_seconds"
CUT_TARGET_MS = 20.0  # one frame
TRANSPORTS = ("websocket", "webrtc")
LABELS = {"websocket": "WebSocket", "webrtc": "WebRTC"}


def histogram_sums(exposition: bytes | str, name: str) -> dict[str, tuple[float, float]]:
    """{transport: (sum, count)} of a histogram labelled by transport."""
    text = exposition.decode("utf-8") if isinstance(exposition, bytes) else exposition
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            transport = sample.labels.get("transport", "")
            slot = out.setdefault(transport, [0.0, 0.0])
            if sample.name == f"{name}_sum":
                slot[0] = float(sample.value)
            elif sample.name == f"{name}_count":
                slot[1] = float(sample.value)
    return {k: (v[0], v[1]) for k, v in out.items()}


def one_observation(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], transport: str
) -> float:
    """The value observed between two scrapes when exactly one was; NaN otherwise."""
    s0, c0 = before.get(transport, (0.0, 0.0))
    s1, c1 = after.get(transport, (0.0, 0.0))
    return s1 - s0 if c1 - c0 == 1 else math.nan


def mic_frames(speech: np.ndarray[Any, Any], rate: int) -> tuple[list[bytes], int]:
    """Silence then ``speech`` as 20 ms s16le frames; the index of the first speech frame."""
    n = frame_samples(rate)
    lead = n * (LEAD_SILENCE_MS // 20)
    audio = np.concatenate([np.zeros(lead, dtype=np.int16), speech.astype(np.int16)])
    audio = np.concatenate([audio, np.zeros(-len(audio) % n, dtype=np.int16)])
    frames = [audio[i : i + n].astype("<i2").tobytes() for i in range(0, len(audio), n)]
    return frames, lead // n


def piper_speech(text: str, rate: int) -> np.ndarray[Any, Any]:
    """``text`` spoken by the bundled Piper voice at ``rate``, leading and trailing quiet cut
    (the first sample above -40 dBFS starts the clip: the onset is exact)."""
    from duplex.worker.adapters.base import AdapterOptions, adapter_for
    from duplex.worker.catalog import builtin_catalog

    voice = adapter_for("piper").load(
        builtin_catalog().get(PIPER_MODEL), AdapterOptions(onnx_threads=1)
    )
    try:
        audio = np.concatenate(list(voice.synthesize(text)))
        native = int(voice.sample_rate)
    finally:
        voice.close()
    resampled = soxr.resample(audio, native, rate).astype(np.int16)
    loud = np.flatnonzero(np.abs(resampled.astype(np.int32)) > 327)
    trimmed: np.ndarray[Any, Any] = resampled[loud[0] : loud[-1] + 1]
    return trimmed


@dataclass(frozen=True)
class Run:
    """One barge-in, in milliseconds (NaN where a part was not seen)."""

    transport: str
    server_detect_ms: float
    server_cut_ms: float
    reported_latency_ms: float
    client_detect_ms: float
    client_last_audio_ms: float
    audio_after_bargein_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in
                self.__dict__.items()}  # fmt: skip


async def scrape(orch: OrchestratorProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    status, body = await asyncio.to_thread(http_get, f"{orch.http_url}/metrics", 5.0)
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    return histogram_sums(body, DETECT), histogram_sums(body, CUT)


async def one_run(
    orch: OrchestratorProcess, transport: str, frames: Sequence[bytes], mark: int
) -> Run:
    session: Session = (
        RtcSession(orch.http_url) if transport == "webrtc" else WsSession(orch.ws_url)
    )
    got = session.got
    async with asyncio.timeout(RUN_LIMIT_S), session:
        await session.connect()
        await session.start(TONE_MODEL, RTC_RATE)
        await session.send({"type": "TextChunk", "text": VOICE_TEXT, "is_final": True})
        await got.wait_for(lambda: len(got.voiced()) >= HEARD_FRAMES, RUN_LIMIT_S)
        detect0, cut0 = await scrape(orch)
        session.play(frames, mark)
        await got.wait_message("BargeIn", RUN_LIMIT_S)
        await got.wait_message("AudioEnd", RUN_LIMIT_S)
        await asyncio.sleep(SETTLE_S)
        detect1, cut1 = await scrape(orch)
        await end(session)
    sent = got.marked_at
    barge = got.first_of("BargeIn")
    if sent is None or barge is None:
        raise RuntimeError("the speech onset was not sent or BargeIn not received")
    at, message = barge
    last = max(got.voiced(), default=math.nan)
    return Run(
        transport=transport,
        server_detect_ms=one_observation(detect0, detect1, transport) * 1000,
        server_cut_ms=one_observation(cut0, cut1, transport) * 1000,
        reported_latency_ms=float(message.get("latency_ms", math.nan)),
        client_detect_ms=(at - sent) * 1000,
        client_last_audio_ms=(last - sent) * 1000,
        audio_after_bargein_ms=(last - at) * 1000,
    )


ROWS = (
    ("(a) speech onset -> VAD decision, server (audio time)", "server_detect_ms"),
    ("(a) first speech frame sent -> BargeIn received, client", "client_detect_ms"),
    ("(b) VAD decision -> last frame sent, server (target 20)", "server_cut_ms"),
    ("BargeIn.latency_ms as reported (a + b, server)", "reported_latency_ms"),
    ("(c) first speech frame sent -> last voiced frame received", "client_last_audio_ms"),
    ("voiced audio received after BargeIn", "audio_after_bargein_ms"),
)


def summaries(runs: Sequence[Run]) -> dict[str, dict[str, dict[str, Any]]]:
    """{transport: {field: Summary.to_dict()}} in milliseconds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for transport in TRANSPORTS:
        mine = [r for r in runs if r.transport == transport]
        out[transport] = {
            key: summarize([v for r in mine if not math.isnan(v := getattr(r, key))]).to_dict()
            for _, key in ROWS
        }
    return out


async def run(ctx: BenchContext, section: Section) -> None:
    repeats = 3 if ctx.quick else 20
    ctx.progress(f"mic audio: Piper says {MIC_TEXT!r} after {LEAD_SILENCE_MS} ms of silence")
    speech = await asyncio.to_thread(piper_speech, MIC_TEXT, RTC_RATE)
    frames, mark = mic_frames(speech, RTC_RATE)
    runs: list[Run] = []
    failures: dict[str, list[str]] = {t: [] for t in TRANSPORTS}
    redis = start_redis()
    stack = contextlib.ExitStack()
    try:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=ctx.workdir)))
        ctx.progress("starting redis-server, a tone worker and the orchestrator (WebRTC on)")
        worker = await start_worker(
            WorkerSpec(name="bench-tone-barge", adapter_type="tone", default_model_id=TONE_MODEL),
            redis.url,
            workdir,
        )
        stack.callback(worker.managed.stop)
        orch = await start_rtc_orchestrator(redis.url, workdir)
        stack.callback(orch.managed.stop)
        ctx.progress(f"{repeats} barge-ins per transport, alternating")
        for i in range(repeats):
            for transport in TRANSPORTS:
                try:
                    runs.append(await one_run(orch, transport, frames, mark))
                except Exception as exc:  # one failed run is counted, the others go on
                    failures[transport].append(f"{type(exc).__name__}: {exc}")
            if (i + 1) % 5 == 0 or i + 1 == repeats:
                ctx.progress(f"{i + 1}/{repeats} runs per transport")
    finally:
        stack.close()
        redis.stop()
    report(ctx, section, runs, failures, repeats)


def report(
    ctx: BenchContext,
    section: Section,
    runs: Sequence[Run],
    failures: dict[str, list[str]],
    repeats: int,
) -> None:
    figures = summaries(runs)
    columns = ["part (ms)"]
    for t in TRANSPORTS:
        columns += [f"{LABELS[t]} p50", f"{LABELS[t]} p95"]
    table = ctx.table(
        section, f"Barge-in latency (ms), p50 / p95 over {repeats} runs", columns, first_width=58
    )
    for label, key in ROWS:
        cells: list[str] = [label]
        for t in TRANSPORTS:
            s = figures[t][key]
            cells += [fmt(s["p50"], 1), fmt(s["p95"], 1)]
        table.add(*cells)
    counts = ctx.table(section, "Runs", ["transport", "barge-ins measured", "failed"])
    for t in TRANSPORTS:
        counts.add(LABELS[t], sum(1 for r in runs if r.transport == t), len(failures[t]))
    min_speech = VadConfig().min_speech_duration_ms
    for t in TRANSPORTS:
        cut = figures[t]["server_cut_ms"]
        detect = figures[t]["server_detect_ms"]
        section.target(
            f"{LABELS[t]}: VAD decision -> last frame sent, p95 <= {CUT_TARGET_MS:.0f} ms",
            f"p50 {fmt(cut['p50'], 1)} ms, p95 {fmt(cut['p95'], 1)} ms",
            None if cut["p95"] is None else cut["p95"] <= CUT_TARGET_MS,
        )
        section.target(
            f"{LABELS[t]}: speech onset -> VAD decision (expect ~min_speech {min_speech} ms)",
            f"server p50 {fmt(detect['p50'], 1)} / p95 {fmt(detect['p95'], 1)} ms; client "
            f"p50 {fmt(figures[t]['client_detect_ms']['p50'], 1)} / p95 "
            f"{fmt(figures[t]['client_detect_ms']['p95'], 1)} ms",
            None,
        )
    section.notes += [
        f"Voice: {TONE_MODEL} (real-time factor 0) speaking one long clause; mic: Piper "
        f"{PIPER_MODEL} saying {MIC_TEXT!r} at 48 kHz after {LEAD_SILENCE_MS} ms of silence, "
        "started once the client had heard 0.5 s of the voice. One session per run, runs "
        "alternating between the transports; defaults: barge_in.policy stop, fade "
        f"{BargeInConfig().fade_ms} ms, vad webrtc, min_speech {min_speech} ms.",
        "(a) server: the VAD's onset to its decision in audio time (the detect histogram); "
        "(a) client: from handing the first speech frame to the wire (WebSocket: ws.send; "
        "WebRTC: the mic track giving it to aiortc's encoder) to the BargeIn message reaching "
        "the client. On WebRTC this includes aiortc's receive jitter buffer on the "
        "orchestrator's mic side (~80 ms).",
        "(b) the cut histogram: the mic frame that decided it arrived -> the output's last "
        "frame handed to the transport, wall time. Each run's value is the change of the "
        "histogram's _sum between two scrapes (exactly one observation per run).",
        "(c) client: first speech frame sent -> the last non-silent frame received. On WebRTC "
        "it includes aiortc's receive jitter buffer twice (the orchestrator's mic, ~80 ms, and "
        "this client's TTS track, ~80 ms), which is why voiced audio still arrives after "
        "BargeIn; a browser's jitter buffer is adaptive and usually shorter. On the WebSocket "
        "no audio follows BargeIn (negative: the last frame came before it).",
        f"Failed runs: {sum(len(v) for v in failures.values())}"
        + "".join(f"; {LABELS[t]}: {v[0]}" for t, v in failures.items() if v),
    ]
    section.data = {
        "repeats": repeats,
        "min_speech_ms": min_speech,
        "summary_ms": figures,
        "runs": [r.to_dict() for r in runs],
        "failures": failures,
        "cut_target_met": {
            t: verdict(
                None
                if figures[t]["server_cut_ms"]["p95"] is None
                else figures[t]["server_cut_ms"]["p95"] <= CUT_TARGET_MS
            )
            for t in TRANSPORTS
        },
    }
