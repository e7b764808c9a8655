"""A benchmark client of the worker ABI (tts.v1) over grpc.aio."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from duplex.gen.tts.v1 import tts_pb2, tts_pb2_grpc

READ_TIMEOUT_S = 30.0


class BenchProtocolError(RuntimeError):
    """The server answered something the ABI does not allow at this point."""


@dataclass(frozen=True)
class Utterance:
    """One text spoken in a session, as the client saw it."""

    text_index: int
    first_audio_s: float  # sending the text -> first audio frame (NaN: no audio)
    audio_s: float
    frames: int
    wall_s: float  # sending the text -> end of the utterance


async def _read(call: grpc.aio.StreamStreamCall, timeout_s: float) -> tts_pb2.SynthesizeResponse:
    msg = await asyncio.wait_for(call.read(), timeout_s)
    if msg is grpc.aio.EOF:
        raise BenchProtocolError("the worker ended the stream early")
    assert isinstance(msg, tts_pb2.SynthesizeResponse)
    return msg


def _open_request(
    model_id: str, lead_ms: int | None, sample_rate: int
) -> tts_pb2.SynthesizeRequest:
    session = tts_pb2.SessionOpen(
        session_id=f"bench-{uuid.uuid4().hex[:12]}",
        model_id=model_id,
        sample_rate=sample_rate,
        language="en",
    )
    if lead_ms is not None:
        session.lead_ms = lead_ms
    return tts_pb2.SynthesizeRequest(open=session)


async def speak_texts(
    channel: grpc.aio.Channel,
    texts: Sequence[tuple[int, str]],
    *,
    model_id: str = "",
    lead_ms: int | None = None,
    sample_rate: int = 0,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> list[Utterance]:
    """One session speaking ``texts`` one after another (each text one utterance, the next
    sent once the previous one has ended)."""
    stub = tts_pb2_grpc.TTSWorkerStub(channel)
    call = stub.Synthesize(timeout=read_timeout_s * (len(texts) + 2) * 4)
    try:
        await call.write(_open_request(model_id, lead_ms, sample_rate))
        opened = await _read(call, read_timeout_s)
        if opened.WhichOneof("kind") != "opened":
            raise BenchProtocolError(f"expected opened, got {opened.WhichOneof('kind')}")
        frame_s = (opened.opened.frame_duration_ms or 20) / 1000
        results: list[Utterance] = []
        for index, text in texts:
            start = time.perf_counter()
            await call.write(
                tts_pb2.SynthesizeRequest(text=tts_pb2.TextChunk(text=text, is_final=True))
            )
            first = float("nan")
            frames = 0
            while True:
                msg = await _read(call, read_timeout_s)
                kind = msg.WhichOneof("kind")
                if kind == "frame":
                    if frames == 0:
                        first = time.perf_counter() - start
                    frames += 1
                elif kind == "utterance_end":
                    break
            results.append(
                Utterance(index, first, frames * frame_s, frames, time.perf_counter() - start)
            )
        await call.done_writing()
        while await asyncio.wait_for(call.read(), read_timeout_s) is not grpc.aio.EOF:
            pass
        return results
    finally:
        call.cancel()


async def stream_arrivals(
    channel: grpc.aio.Channel,
    text: str,
    *,
    model_id: str,
    until: float,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> list[float]:
    """Open a session, speak ``text`` and record each frame's arrival time
    (``time.perf_counter``) until ``until`` or the utterance ends; then cancel."""
    stub = tts_pb2_grpc.TTSWorkerStub(channel)
    call = stub.Synthesize(timeout=max(1.0, until - time.perf_counter()) + read_timeout_s)
    arrivals: list[float] = []
    try:
        await call.write(_open_request(model_id, None, 0))
        opened = await _read(call, read_timeout_s)
        if opened.WhichOneof("kind") != "opened":
            raise BenchProtocolError(f"expected opened, got {opened.WhichOneof('kind')}")
        await call.write(
            tts_pb2.SynthesizeRequest(text=tts_pb2.TextChunk(text=text, is_final=True))
        )
        while True:
            remaining = until - time.perf_counter()
            if remaining <= 0:
                break
            try:
                msg = await _read(call, min(read_timeout_s, remaining))
            except TimeoutError:
                break
            kind = msg.WhichOneof("kind")
            if kind == "frame":
                arrivals.append(time.perf_counter())
            elif kind == "utterance_end":
                break
        return arrivals
    finally:
        call.cancel()


async def capabilities(channel: grpc.aio.Channel) -> tts_pb2.GetCapabilitiesResponse:
    stub = tts_pb2_grpc.TTSWorkerStub(channel)
    reply = await stub.GetCapabilities(tts_pb2.GetCapabilitiesRequest(), timeout=5.0)
    assert isinstance(reply, tts_pb2.GetCapabilitiesResponse)
    return reply
