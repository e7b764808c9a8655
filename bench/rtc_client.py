"""Benchmark clients of the orchestrator's two full-duplex transports, with one interface.

`RtcSession` is a real aiortc peer (`POST /offer`, the `control` data channel, a mic track,
the received TTS track); `WsSession` is its WebSocket twin (JSON text messages, binary PCM
both ways). Both stamp everything with `time.perf_counter()` at the same points (a message
or frame handed to our code, a mic frame handed to the wire) and judge silence by the same
peak threshold, so the two transports are measured by the same code.

All traffic stays on 127.0.0.1: the orchestrator offers 127.0.0.1 only
(`transport.webrtc.host_addresses`, set by `start_rtc_orchestrator`), the client gathers its
ICE candidates on 127.0.0.1 only and configures no ICE server, and HTTP goes through a
minimal asyncio client that no proxy variable can reroute. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import yaml
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from duplex.devtools.redis_server import free_port
from duplex.orchestrator.transports.rtc_ice import restricted_host_addresses
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.grpc_client import BenchProtocolError
from bench.procs import OrchestratorProcess, http_get, orchestrator_config, spawn

LOOPBACK = ("127.0.0.1",)
RTC_RATE = 48000
FRAME_S = 0.020
DEADLINE_S = 20.0
# A received frame whose loudest sample is at most this is silence: Opus decodes the idle
# track's digital silence to (near) zeros; the tone voice peaks at ~9800, Piper at thousands.
SILENT_PEAK = 300
# Digital silence through Opus decodes to (almost) exact zeros; a pause between words in
# speech does not (its frames peak at ~50-300), so this tells "the voice is over" apart.
DIGITAL_SILENCE_PEAK = 8
_TIME_BASE = fractions.Fraction(1, RTC_RATE)


def now() -> float:
    return time.perf_counter()


def peak(pcm: bytes | np.ndarray[Any, Any]) -> int:
    """The loudest sample of s16 audio (bytes or an array; 0 when empty)."""
    data = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes) else pcm
    return int(np.abs(data.astype(np.int32)).max()) if data.size else 0


async def start_rtc_orchestrator(
    redis_url: str, workdir: Path, *, max_connections: int = 400, ready_timeout_s: float = 60.0
) -> OrchestratorProcess:
    """`python -m duplex.orchestrator` with WebRTC offering 127.0.0.1 only; ready when
    GET /ready answers 200 (Redis and a worker)."""
    port = free_port()
    config = orchestrator_config(port, redis_url, max_connections)
    config["transport"]["webrtc"] = {
        "enabled": True,
        "host_addresses": list(LOOPBACK),
        "ice_servers": [],
        "connect_timeout_s": 15.0,
    }
    config_path = workdir / "orchestrator-rtc.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    managed = spawn(
        "orchestrator-rtc", ["-m", "duplex.orchestrator", "--config", str(config_path)], workdir
    )
    orch = OrchestratorProcess(port, managed)
    try:
        async with asyncio.timeout(ready_timeout_s):
            while True:
                if not managed.alive():
                    raise RuntimeError(
                        f"orchestrator exited with {managed.process.returncode}:\n"
                        + managed.log_tail()
                    )
                status, _ = await asyncio.to_thread(http_get, f"{orch.http_url}/ready", 1.0)
                if status == 200:
                    return orch
                await asyncio.sleep(0.2)
    except BaseException:
        managed.stop()
        raise


async def post_json(url: str, payload: dict[str, Any], *, limit_s: float) -> dict[str, Any]:
    """POST a JSON body over a fresh loopback HTTP/1.1 connection; the JSON reply."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = json.dumps(payload).encode()
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    async with asyncio.timeout(limit_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    headers, _, data = rest.partition(b"\r\n\r\n")
    status = int(status_line.split()[1]) if status_line else 0
    if b"transfer-encoding: chunked" in headers.lower():  # /offer answers with a length
        raise BenchProtocolError(f"POST {url}: chunked replies are not expected")
    if status != 200:
        raise BenchProtocolError(f"POST {url} answered {status}: {data[:300]!r}")
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise BenchProtocolError(f"POST {url}: expected a JSON object, got {data[:200]!r}")
    return reply


class Recorder:
    """What a session received, stamped: messages (time, JSON) and audio frames (time, peak)."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.frame_times: list[float] = []
        self.frame_peaks: list[int] = []
        # Perf-counter time the marked mic frame (the speech onset) went out; see `play`.
        self.marked_at: float | None = None
        self._changed = asyncio.Event()

    def add_message(self, raw: str | bytes) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if isinstance(data, dict):
            self.messages.append((now(), data))
            self._changed.set()

    def add_frame(self, at: float, loudest: int) -> None:
        self.frame_times.append(at)
        self.frame_peaks.append(loudest)
        self._changed.set()

    def of_type(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.messages if m.get("type") == kind]

    def first_of(self, kind: str) -> tuple[float, dict[str, Any]] | None:
        found = self.of_type(kind)
        return found[0] if found else None

    def voiced(self, after: float = -1.0) -> list[float]:
        """Arrival times of the non-silent frames received after ``after``."""
        return [
            t
            for t, p in zip(self.frame_times, self.frame_peaks, strict=True)
            if t > after and p > SILENT_PEAK
        ]

    def first_voiced_from(self, index: int, threshold: int = SILENT_PEAK) -> float | None:
        """Arrival time of the first frame at or after frame ``index`` with a sample louder
        than ``threshold``."""
        for t, p in zip(self.frame_times[index:], self.frame_peaks[index:], strict=True):
            if p > threshold:
                return t
        return None

    def silent_tail(self, threshold: int = SILENT_PEAK) -> int:
        """How many frames in a row at the end had no sample louder than ``threshold``."""
        count = 0
        for p in reversed(self.frame_peaks):
            if p > threshold:
                break
            count += 1
        return count

    async def wait_for(self, predicate: Callable[[], object], limit_s: float) -> None:
        """Until ``predicate()`` holds (checked at every message and frame); TimeoutError."""
        async with asyncio.timeout(limit_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_message(self, kind: str, limit_s: float, *, count: int = 1) -> None:
        def seen() -> bool:
            errors = self.of_type("Error") + self.of_type("SessionEnded")
            if errors:
                raise BenchProtocolError(f"orchestrator said {errors[0][1]}")
            return len(self.of_type(kind)) >= count

        await self.wait_for(seen, limit_s)


class MicTrack(MediaStreamTrack):
    """A microphone on the clock: silence until `play` queues frames; stamps the marked one."""

    kind = "audio"

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder
        self._queue: list[bytes] = []
        self._mark: int | None = None
        self._start: float | None = None
        self._pts = 0

    def play(self, frames: Sequence[bytes], mark: int) -> None:
        """Queue 20 ms mono s16le 48 kHz frames; frame ``mark`` is stamped when it goes out."""
        self._queue = list(frames)
        self._mark = mark
        self._recorder.marked_at = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        t = time.monotonic()
        if self._start is None:
            self._start = t
        else:
            wait = self._start + self._pts / RTC_RATE - t
            if wait > 0:
                await asyncio.sleep(wait)
        samples = int(RTC_RATE * FRAME_S)
        pcm = self._queue.pop(0) if self._queue else bytes(samples * 2)
        if self._mark is not None:
            if self._mark == 0:
                self._recorder.marked_at = now()
                self._mark = None
            else:
                self._mark -= 1
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RTC_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self._pts += samples
        return frame


class RtcSession:
    """One aiortc peer of the orchestrator: `connect`, `start`, `send`, `play`, `close`."""

    transport = "webrtc"

    def __init__(self, base_url: str, *, mic: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.got = Recorder()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = MicTrack(self.got) if mic else None
        self._channel: RTCDataChannel | None = None
        self._open = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RtcSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, limit_s: float = DEADLINE_S) -> None:
        """Offer (candidates on 127.0.0.1 only), answer, until `control` is open."""
        pc = self.pc
        if self.mic is not None:
            pc.addTrack(self.mic)
        else:
            pc.addTransceiver("audio", direction="recvonly")
        channel = self._channel = pc.createDataChannel("control")
        channel.on("open", self._open.set)
        channel.on("message", self.got.add_message)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                task = asyncio.create_task(self._read_audio(track), name="bench-rtc-audio")
                self._tasks.add(task)

        async with asyncio.timeout(limit_s):
            with restricted_host_addresses(LOOPBACK):
                await pc.setLocalDescription(await pc.createOffer())
            reply = await post_json(
                self.base_url + "/offer",
                {"sdp": pc.localDescription.sdp, "type": "offer"},
                limit_s=limit_s,
            )
            await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
            await self._open.wait()

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.AudioFrame):
                self.got.add_frame(now(), peak(frame.to_ndarray()))

    async def send(self, message: dict[str, Any]) -> float:
        """Send a JSON message on `control`; the time it was handed to the channel."""
        if self._channel is None:
            raise BenchProtocolError("not connected")
        at = now()
        self._channel.send(json.dumps(message))
        return at

    async def start(self, model_id: str, sample_rate: int, limit_s: float = DEADLINE_S) -> str:
        """SessionStart -> SessionStarted; the worker's name."""
        return await _start(self, model_id, sample_rate, limit_s)

    def play(self, frames: Sequence[bytes], mark: int) -> None:
        """Mic audio (48 kHz frames) on the track; ``got.marked_at`` stamps frame ``mark``."""
        if self.mic is None:
            raise BenchProtocolError("this session has no mic track")
        self.mic.play(frames, mark)

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.pc.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


class WsSession:
    """The WebSocket twin of `RtcSession` (mic frames as binary messages)."""

    transport = "websocket"

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.got = Recorder()
        self._ws: ClientConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> WsSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, limit_s: float = DEADLINE_S) -> None:
        # proxy=None: websockets honours *_PROXY variables by default; ours is loopback only.
        self._ws = await connect(
            self.ws_url, proxy=None, open_timeout=limit_s, max_size=2**20, ping_interval=None
        )
        self._spawn(self._read(self._ws), "bench-ws-read")

    def _spawn(self, work: Any, name: str) -> None:
        self._tasks.add(asyncio.create_task(work, name=name))

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(OSError, ConnectionClosed):
            async for raw in ws:
                if isinstance(raw, bytes):
                    self.got.add_frame(now(), peak(raw))
                else:
                    self.got.add_message(raw)

    async def send(self, message: dict[str, Any]) -> float:
        if self._ws is None:
            raise BenchProtocolError("not connected")
        at = now()
        await self._ws.send(json.dumps(message))
        return at

    async def start(self, model_id: str, sample_rate: int, limit_s: float = DEADLINE_S) -> str:
        return await _start(self, model_id, sample_rate, limit_s)

    def play(self, frames: Sequence[bytes], mark: int) -> None:
        """Send the frames at real time (a microphone); stamps frame ``mark`` as it is sent."""
        self.got.marked_at = None
        self._spawn(self._stream(list(frames), mark), "bench-ws-mic")

    async def _stream(self, frames: list[bytes], mark: int) -> None:
        ws = self._ws
        if ws is None:
            return
        start = time.monotonic()
        with contextlib.suppress(OSError, ConnectionClosed):
            for i, pcm in enumerate(frames):
                if i == mark:
                    self.got.marked_at = now()
                await ws.send(pcm)
                await asyncio.sleep(max(0.0, start + (i + 1) * FRAME_S - time.monotonic()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._ws is not None:
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(5.0):
                    await self._ws.close()


Session = RtcSession | WsSession


async def _start(session: Session, model_id: str, sample_rate: int, limit_s: float) -> str:
    await session.send({"type": "SessionStart", "model_id": model_id, "sample_rate": sample_rate})
    await session.got.wait_message("SessionStarted", limit_s)
    started = session.got.first_of("SessionStarted")
    return str(started[1].get("worker", "")) if started else ""


async def end(session: Session, limit_s: float = 5.0) -> None:
    """SessionEnd, then SessionEnded (or the deadline: the close follows either way)."""
    with contextlib.suppress(TimeoutError, OSError, BenchProtocolError):
        await session.send({"type": "SessionEnd"})
        await session.got.wait_for(lambda: session.got.of_type("SessionEnded"), limit_s)
