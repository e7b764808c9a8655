"""A real aiortc client peer for tests: mic track, `control` data channel, received audio.

    async with RtcClient(base_url, mic=pcm_48k_mono) as client:
        await client.connect()                      # POST /offer (or whip=True: POST /whip)
        await client.send({"type": "SessionStart", "model_id": "tone-fast"})
        await client.wait_for(lambda c: c.of_type("SessionStarted"))

Everything stays on loopback: ICE host candidates are restricted to 127.0.0.1 and no ICE
server is configured. HTTP goes through a minimal asyncio HTTP/1.1 client (no proxy settings
from the environment can reroute it, and every request has a deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from duplex.orchestrator.transports.rtc_ice import restricted_host_addresses

LOOPBACK = ("127.0.0.1",)
DEADLINE_S = 20.0
RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
_TIME_BASE = fractions.Fraction(1, RATE)


# ---------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


async def http(
    method: str,
    url: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    limit_s: float = DEADLINE_S,
) -> HttpReply:
    """One HTTP/1.1 request over a fresh connection (`Connection: close`)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    async with asyncio.timeout(limit_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    reply_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        reply_headers[name.strip().lower()] = value.strip()
    if reply_headers.get("transfer-encoding", "").lower() == "chunked":
        payload = _unchunk(payload)
    return HttpReply(int(status_line.split()[1]), reply_headers, payload)


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


# ---------------------------------------------------------------- media


class PcmTrack(MediaStreamTrack):
    """A mic that plays `pcm` (mono s16le at 48 kHz) once, then silence; paced by the clock.

    `play(pcm)` queues more audio (appended after what is still playing).
    """

    kind = "audio"

    def __init__(self, pcm: bytes = b"") -> None:
        super().__init__()
        self._pending = bytearray(pcm)
        self._start: float | None = None
        self._pts = 0
        self.frames_sent = 0

    def play(self, pcm: bytes) -> None:
        self._pending += pcm

    @property
    def playing(self) -> bool:
        return bool(self._pending)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._pts / RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = bytes(self._pending[: FRAME * 2])
        del self._pending[: FRAME * 2]
        chunk += bytes(FRAME * 2 - len(chunk))
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(chunk, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self._pts += FRAME
        self.frames_sent += 1
        return frame


def mono(frame: av.AudioFrame) -> npt.NDArray[np.int16]:
    """A decoded frame as mono int16 (aiortc decodes Opus as interleaved stereo)."""
    data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
    out: npt.NDArray[np.int16] = data[:, 0].astype(np.int16)
    return out


def tone(seconds: float, hz: float = 440.0, level: float = 0.3) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * level * 32767).astype("<i2").tobytes()


# ---------------------------------------------------------------- the peer


@dataclass
class Received:
    messages: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str | bytes] = field(default_factory=list)
    audio: list[npt.NDArray[np.int16]] = field(default_factory=list)  # 20 ms mono frames

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def peak(self, start: int = 0) -> int:
        """The loudest sample of frames [start:] (0 when none)."""
        frames = self.audio[start:]
        return int(max((np.abs(f.astype(np.int32)).max() for f in frames), default=0))


class RtcClient:
    """One aiortc peer talking to the orchestrator's signalling at `base_url` (http://...)."""

    def __init__(
        self, base_url: str, *, mic: bytes | None = b"", data_channel: bool = True
    ) -> None:
        """`mic`: PCM to play on a mic track (None: receive-only audio, no mic track)."""
        self.base_url = base_url.rstrip("/")
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = PcmTrack(mic) if mic is not None else None
        self.got = Received()
        self.channel: RTCDataChannel | None = None
        self.peer_id: str | None = None
        self.location: str | None = None
        self._want_channel = data_channel
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = asyncio.Event()

    async def __aenter__(self) -> RtcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- setup

    def _prepare(self) -> None:
        if self.mic is not None:
            self.pc.addTrack(self.mic)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        if self._want_channel:
            channel = self.channel = self.pc.createDataChannel("control")
            channel.on("open", self._open.set)
            channel.on("message", self._on_message)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                task = asyncio.create_task(self._read_audio(track), name="rtc-client-audio")
                self._tasks.add(task)

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            self._changed.set()

    async def offer_sdp(self) -> str:
        """Prepare tracks and channel, gather on loopback, return the offer's SDP."""
        self._prepare()
        offer = await self.pc.createOffer()
        with restricted_host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(offer)
        return str(self.pc.localDescription.sdp)

    async def connect(self, *, whip: bool = False, limit_s: float = DEADLINE_S) -> None:
        """Offer, answer, and (with a data channel) wait until `control` is open."""
        sdp = await self.offer_sdp()
        if whip:
            reply = await http(
                "POST", self.base_url + "/whip", sdp.encode(), {"Content-Type": "application/sdp"}
            )
            assert reply.status == 201, (reply.status, reply.text)
            self.location = reply.headers["location"]
            self.peer_id = self.location.rsplit("/", 1)[-1]
            answer = reply.text
        else:
            body = json.dumps({"sdp": sdp, "type": "offer"}).encode()
            reply = await http(
                "POST", self.base_url + "/offer", body, {"Content-Type": "application/json"}
            )
            assert reply.status == 200, (reply.status, reply.text)
            obj = reply.json()
            assert obj["type"] == "answer"
            self.peer_id = obj["peer_id"]
            answer = obj["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        if self._want_channel:
            async with asyncio.timeout(limit_s):
                await self._open.wait()

    async def delete(self) -> HttpReply:
        """WHIP: DELETE the session's location."""
        assert self.location is not None
        return await http("DELETE", self.base_url + self.location)

    # ---- traffic

    def _on_message(self, message: str | bytes) -> None:
        self.got.raw.append(message)
        if isinstance(message, str):
            with contextlib.suppress(ValueError):
                self.got.messages.append(json.loads(message))
        self._changed.set()

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            self.got.audio.append(mono(frame))
            self._changed.set()

    def send_raw(self, data: str | bytes, *, ignore_size_limit: bool = False) -> None:
        """Send as-is. `ignore_size_limit`: act as a peer that ignores the other side's
        a=max-message-size (aiortc refuses to send over it; a hostile client would not)."""
        assert self.channel is not None
        if ignore_size_limit:
            sctp = self.pc.sctp
            assert sctp is not None
            sctp._remote_max_message_size = 0  # 0: "any size" in aiortc
        self.channel.send(data)

    async def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message))

    async def wait_for(
        self, predicate: Callable[[RtcClient], object], limit_s: float = DEADLINE_S
    ) -> None:
        """Until `predicate(self)` is true (checked at every message, frame or state change)."""
        async with asyncio.timeout(limit_s):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return self.got.of_type(kind)

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
