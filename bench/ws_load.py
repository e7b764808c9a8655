"""The capacity load generator: many WebSocket sessions in one lean process of their own.

    python -m bench.ws_load --url ws://127.0.0.1:PORT/ --sessions N --text T --model M \
        --until PERF_COUNTER_S --out results.json

A hand-rolled RFC 6455 client on a bare `asyncio.Protocol` (uvloop): the server's frames are
unmasked, so a binary frame costs a header parse and a `perf_counter()` call, far less than a
full WebSocket library per message. At a few hundred sessions the load generator shares the
machine's 2 cores with the orchestrator under test, so its own cost is part of the figure; it
runs in its own process and the bench reports its CPU beside the orchestrator's.

Arrival times are `time.perf_counter()` values, the system-wide monotonic clock on Linux, so
the parent compares them with its own window. Written as JSON: one entry per session,
``{"worker": str, "arrivals": [s, ...]}`` or ``{"error": str}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import uvloop

OPEN_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 5.0
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_OP_CLOSE = 0x8


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (clients must mask, RFC 6455 5.3)."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return header + key + masked


class LeanWebSocket(asyncio.Protocol):
    """Client side of one connection: records binary frame arrivals, queues text messages."""

    def __init__(self, host: str, path: str) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}"
            "\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._buf = bytearray()
        self._open = False
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.texts: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.arrivals: list[float] = []
        self.recording = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self._buf
        buf += data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode("latin-1")))
                return
            self._open = True
            self.opened.set_result(None)
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            opcode = buf[pos] & 0x0F
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if size - start < length:
                break
            if opcode == _OP_BINARY:
                if self.recording:
                    self.arrivals.append(now)
            elif opcode == _OP_TEXT:
                self.texts.put_nowait(json.loads(bytes(buf[start : start + length])))
            elif opcode == _OP_CLOSE and self._transport is not None:
                self._transport.close()
            pos = start + length
        del buf[:pos]

    def send_json(self, message: dict[str, Any]) -> None:
        assert self._transport is not None
        self._transport.write(mask_frame(_OP_TEXT, json.dumps(message).encode()))

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(mask_frame(_OP_CLOSE, (1000).to_bytes(2, "big")))
            self._transport.close()


async def _next_text(ws: LeanWebSocket, timeout_s: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        return await ws.texts.get()


async def one_session(
    url: str, text: str, model_id: str | None, until: float, sample_rate: int
) -> dict[str, Any]:
    """Open a session, speak ``text``, record binary frame arrivals until ``until``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(OPEN_TIMEOUT_S):
        _, ws = await loop.create_connection(
            lambda: LeanWebSocket(f"{host}:{port}", parts.path or "/"), host, port
        )
        await ws.opened
    try:
        start: dict[str, Any] = {
            "type": "SessionStart",
            "language": "en",
            "sample_rate": sample_rate,
        }
        if model_id:
            start["model_id"] = model_id
        ws.send_json(start)
        reply = await _next_text(ws, OPEN_TIMEOUT_S)
        if reply.get("type") != "SessionStarted":
            return {"error": f"SessionStart answered with {reply}"}
        started = time.perf_counter()
        ws.send_json({"type": "TextChunk", "text": text, "is_final": True})
        while (remaining := until - time.perf_counter()) > 0:
            try:
                msg = await _next_text(ws, remaining)
            except TimeoutError:
                break
            if msg.get("type") in ("Error", "SessionEnded"):
                return {"error": f"orchestrator said {msg}"}
            if msg.get("type") == "AudioEnd":
                break
        ws.recording = False
        ws.send_json({"type": "SessionEnd"})
        return {"worker": str(reply.get("worker", "")), "started": started, "arrivals": ws.arrivals}
    finally:
        ws.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await ws.closed


async def run_sessions(
    url: str, sessions: int, text: str, model_id: str | None, until: float, sample_rate: int
) -> list[dict[str, Any]]:
    async def guarded() -> dict[str, Any]:
        try:
            return await one_session(url, text, model_id, until, sample_rate)
        except (OSError, TimeoutError, ValueError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    return list(await asyncio.gather(*(guarded() for _ in range(sessions))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--until", type=float, required=True, help="time.perf_counter() value")
    parser.add_argument("--sample-rate", type=int, default=48000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if hasattr(os, "SCHED_BATCH"):
        # Every frame that arrives wakes this process; as a batch task it does not preempt
        # the orchestrator under test on each wake-up (Linux), it runs when a core is free.
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(
            run_sessions(
                args.url, args.sessions, args.text, args.model, args.until, args.sample_rate
            )
        )
    args.out.write_text(json.dumps(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
