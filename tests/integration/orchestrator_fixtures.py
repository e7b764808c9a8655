"""Helpers for end-to-end orchestrator tests: a real orchestrator over uvicorn on a free port,
real in-process workers, and a real `websockets` client that records what comes back.

    async with running_orchestrator(orch_config(redis_url)) as orch:
        await wait_for_workers(orch, {"w1"})
        async with Client(orch) as client:
            await client.start(model_id="tone-fast")
            result = await client.say("Hello there.")
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import OrchestratorConfig, SessionConfig
from duplex.registry.records import RoutingSettings, WorkerRecord
from duplex.worker.catalog import Catalog, ModelSpec
from websockets.asyncio.client import ClientConnection, connect

DEADLINE_S = 20.0
FRAME_MS = 20


def orch_config(
    redis_url: str,
    *,
    routing: RoutingSettings | None = None,
    worker_ttl_ms: int = 1000,
    **session: Any,
) -> OrchestratorConfig:
    """An orchestrator on 127.0.0.1, port 0, fast registry reconcile; session overrides."""
    base = OrchestratorConfig()
    ws = replace(base.transport.websocket, host="127.0.0.1", port=0, idle_timeout_s=30.0)
    # WebRTC offers loopback only: test traffic never leaves the machine.
    rtc = replace(base.transport.webrtc, host_addresses=("127.0.0.1",))
    return replace(
        base,
        transport=replace(base.transport, websocket=ws, webrtc=rtc),
        routing=routing or RoutingSettings(),
        redis=replace(
            base.redis, url=redis_url, reconcile_interval_ms=200, worker_ttl_ms=worker_ttl_ms
        ),
        session=replace(SessionConfig(), **session),
    )


@asynccontextmanager
async def running_orchestrator(config: OrchestratorConfig) -> AsyncIterator[OrchestratorServer]:
    async with OrchestratorServer(config) as server:
        yield server


def view_workers(server: OrchestratorServer) -> Mapping[str, WorkerRecord]:
    """What the orchestrator's registry view holds now."""
    return server.app.state.runtime.view.workers()  # type: ignore[no-any-return]


async def wait_for_workers(
    server: OrchestratorServer, names: Iterable[str], *, exact: bool = False, limit_s: float = 10.0
) -> float:
    """Until the orchestrator sees every worker in `names` (and only those, if `exact`);
    returns the seconds waited."""
    want = set(names)
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        while True:
            seen = set(view_workers(server))
            if (seen == want) if exact else want <= seen:
                return time.monotonic() - started
            await asyncio.sleep(0.02)


def tone_catalog(model_id: str, languages: tuple[str, ...], *, rtf: float = 0.0) -> Catalog:
    """A catalog with one tone model that announces only `languages`."""
    return Catalog(
        [
            ModelSpec(
                model_id=model_id,
                family="tone",
                languages=languages,
                capabilities=("streaming",),
                native_sample_rate=24000,
                description=f"test tone ({', '.join(languages)})",
                params={"rtf": repr(rtf)},
            )
        ]
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Utterance:
    """What the client received for one utterance."""

    frames: list[bytes] = field(default_factory=list)
    first_frame_at: float | None = None
    ended_at: float | None = None
    # Frames received when a message type first arrived while this utterance was playing.
    marks: dict[str, int] = field(default_factory=dict)

    @property
    def duration_ms(self) -> int:
        return len(self.frames) * FRAME_MS


@dataclass
class Received:
    """Everything a client got, in order."""

    started: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    utterances: dict[int, Utterance] = field(default_factory=dict)
    frame_sizes: set[int] = field(default_factory=set)
    current: int = 0  # the utterance that frames now belong to

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def audio_ends(self) -> list[int]:
        return [int(m["utterance"]) for m in self.of_type("AudioEnd")]

    def utterance(self, index: int) -> Utterance:
        return self.utterances.setdefault(index, Utterance())


class Client:
    """A real WebSocket client with a background reader."""

    def __init__(self, server: OrchestratorServer | str) -> None:
        self.url = server if isinstance(server, str) else server.url
        self.got = Received()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._finals = 0  # final chunks sent: the next utterance's number
        self.closed = False

    async def __aenter__(self) -> Client:
        self._ws = await connect(self.url, proxy=None, open_timeout=DEADLINE_S, max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with _suppress_cancel():
                await self._reader
        if self._ws is not None:
            await self._ws.close()

    @property
    def ws(self) -> ClientConnection:
        assert self._ws is not None
        return self._ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def start(self, **fields: Any) -> dict[str, Any]:
        """SessionStart; returns the first reply (SessionStarted or Error)."""
        await self.send({"type": "SessionStart", **fields})
        raw = await asyncio.wait_for(self.ws.recv(), DEADLINE_S)
        assert isinstance(raw, str)
        reply: dict[str, Any] = json.loads(raw)
        if reply["type"] == "SessionStarted":
            self.got.started = reply
            self._reader = asyncio.create_task(self._read(), name="test-ws-reader")
        return reply

    async def text(self, text: str, *, is_final: bool = False) -> None:
        await self.send({"type": "TextChunk", "text": text, "is_final": is_final})
        self._finals += is_final

    async def control(self, command: str) -> None:
        await self.send({"type": "Control", "command": command})

    async def wait_for(self, predicate: Any, limit_s: float = DEADLINE_S) -> None:
        """Until `predicate(self.got)`; fails if the connection closes first."""
        async with asyncio.timeout(limit_s):
            while not predicate(self.got):
                if self.closed:
                    assert predicate(self.got), f"connection closed: {self.got.messages}"
                self._changed.clear()
                await self._changed.wait()

    async def say(self, text: str, *, limit_s: float = DEADLINE_S) -> Utterance:
        """One final TextChunk; waits for its AudioEnd and returns its audio."""
        index = self._finals
        await self.text(text, is_final=True)
        await self.wait_for(lambda got: index in got.audio_ends(), limit_s)
        return self.got.utterance(index)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                now = time.monotonic()
                if isinstance(raw, bytes):
                    self.got.frame_sizes.add(len(raw))
                    utt = self.got.utterance(self.got.current)
                    if utt.first_frame_at is None:
                        utt.first_frame_at = now
                    utt.frames.append(raw)
                else:
                    message = json.loads(raw)
                    self.got.messages.append(message)
                    current = self.got.utterance(self.got.current)
                    current.marks.setdefault(message["type"], len(current.frames))
                    if message["type"] == "AudioEnd":
                        self.got.utterance(int(message["utterance"])).ended_at = now
                        self.got.current = int(message["utterance"]) + 1
                self._changed.set()
        finally:
            self.closed = True
            self._changed.set()


class _suppress_cancel:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is asyncio.CancelledError


def tone_frames(text: str) -> int:
    """Frames the tone voice gives for `text` (60 ms a character, per clause, rounded up)."""
    from duplex.text import ClauseSegmenter
    from duplex.worker.adapters.tone import tone_duration_ms

    seg = ClauseSegmenter()
    clauses = seg.push(text) + seg.finish()
    return sum(-(-tone_duration_ms(c.text) // FRAME_MS) for c in clauses if not c.is_blank)
