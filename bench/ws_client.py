"""A benchmark client of the orchestrator's WebSocket protocol (JSON control, binary PCM)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.grpc_client import BenchProtocolError, Utterance

READ_TIMEOUT_S = 30.0
OPEN_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class WsSessionResult:
    worker: str
    utterances: list[Utterance]


async def _recv(ws: ClientConnection, timeout_s: float) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout_s)


def _json(raw: str | bytes) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise BenchProtocolError(f"expected a JSON object, got {raw!r:.200}")
    return data


async def _start(ws: ClientConnection, model_id: str | None, sample_rate: int) -> str:
    start: dict[str, Any] = {"type": "SessionStart", "language": "en", "sample_rate": sample_rate}
    if model_id:
        start["model_id"] = model_id
    await ws.send(json.dumps(start))
    reply = _json(await _recv(ws, OPEN_TIMEOUT_S))
    if reply.get("type") != "SessionStarted":
        raise BenchProtocolError(f"SessionStart answered with {reply}")
    return str(reply.get("worker", ""))


async def _end(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "SessionEnd"}))
    try:
        while True:
            raw = await _recv(ws, 5.0)
            if isinstance(raw, str) and _json(raw).get("type") == "SessionEnded":
                return
    except (TimeoutError, OSError):
        return


def _connect(url: str) -> Any:
    # proxy=None: websockets honours *_PROXY variables by default; ours is loopback only.
    return connect(url, proxy=None, open_timeout=OPEN_TIMEOUT_S, max_size=2**20, ping_interval=None)


async def speak_texts_ws(
    url: str,
    texts: Sequence[tuple[int, str]],
    *,
    model_id: str | None = None,
    sample_rate: int = 48000,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> WsSessionResult:
    """One WebSocket session speaking ``texts`` one after another (one utterance each)."""
    frame_s = 0.020
    async with _connect(url) as ws:
        worker = await _start(ws, model_id, sample_rate)
        results: list[Utterance] = []
        for index, text in texts:
            start = time.perf_counter()
            await ws.send(json.dumps({"type": "TextChunk", "text": text, "is_final": True}))
            first = float("nan")
            frames = 0
            while True:
                raw = await _recv(ws, read_timeout_s)
                if isinstance(raw, bytes):
                    if frames == 0:
                        first = time.perf_counter() - start
                    frames += 1
                    continue
                msg = _json(raw)
                kind = msg.get("type")
                if kind == "AudioEnd":
                    break
                if kind in ("Error", "SessionEnded"):
                    raise BenchProtocolError(f"orchestrator said {msg}")
            results.append(
                Utterance(index, first, frames * frame_s, frames, time.perf_counter() - start)
            )
        await _end(ws)
    return WsSessionResult(worker, results)


async def stream_arrivals_ws(
    url: str,
    text: str,
    *,
    model_id: str | None,
    until: float,
    sample_rate: int = 48000,
) -> tuple[str, list[float]]:
    """Open a session, speak ``text``, record each binary frame's arrival time
    (``time.perf_counter``) until ``until`` or AudioEnd; returns (worker, arrivals)."""
    arrivals: list[float] = []
    async with _connect(url) as ws:
        worker = await _start(ws, model_id, sample_rate)
        await ws.send(json.dumps({"type": "TextChunk", "text": text, "is_final": True}))
        while True:
            remaining = until - time.perf_counter()
            if remaining <= 0:
                break
            try:
                raw = await _recv(ws, min(READ_TIMEOUT_S, remaining))
            except TimeoutError:
                break
            if isinstance(raw, bytes):
                arrivals.append(time.perf_counter())
                continue
            msg = _json(raw)
            if msg.get("type") in ("AudioEnd", "SessionEnded"):
                break
            if msg.get("type") == "Error":
                raise BenchProtocolError(f"orchestrator said {msg}")
        await _end(ws)
    return worker, arrivals
