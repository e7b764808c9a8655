"""One text in, its audio out: the compatible APIs' requests as sessions of the session layer.

`/v1/audio/speech` and the Wyoming server take a text (whole, or streamed in chunks) and
stream its audio back. Each request becomes a `ClientConnection` of a `SessionHub`, so
routing, strategies, in-flight counts and failover are those of every WebSocket session.
Their hub is its own, built on a copy of the config that does not pace: these clients want
the bytes as fast as they come (a file, a player with its own buffer), not at real time, so
the orchestrator's pacer runs with a lead longer than any text, and the worker with a lead
of a few seconds (`API_WORKER_LEAD_MS`): a short reply comes as fast as it is made, a long
one cannot hold the worker's threads for minutes. The text is split into utterances no
longer than the worker takes, and the session segments each at clauses, so the first
clause is spoken before the rest is synthesized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from enum import StrEnum

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.config import OrchestratorConfig
from duplex.orchestrator.errors import DuplexError, ErrorCode
from duplex.orchestrator.pages import models_from_workers
from duplex.orchestrator.protocol import (
    AudioEnd,
    Error,
    ServerMessage,
    SessionEnded,
    SessionStart,
    SessionStarted,
    TextChunk,
    WorkerFailover,
)
from duplex.orchestrator.session.connection import ClientConnection
from duplex.orchestrator.session.hub import SessionHub
from duplex.orchestrator.session.services import SessionServices
from duplex.orchestrator.transports.base import ClientChannel, TransportKind
from duplex.registry.orchestrators import SessionSummary
from duplex.registry.view import RegistryView

log = logging.getLogger(__name__)

# How far ahead of real time the worker may send a request's audio. The first seconds of
# every reply go out as fast as they are made; the rest of a longer text at real time, so
# the worker synthesizes at most this (plus its 10 s backlog) ahead. With no lead, it made
# a whole 4,096-character text (minutes of audio) flat out, an inference thread busy with
# it all along while other requests' first clauses came in.
API_WORKER_LEAD_MS = 3000
# Longer than any text a request may carry: the pacer sends every frame as it arrives.
_UNPACED_LEAD_MS = 24 * 3600 * 1000
# Frames held for a reader that is slower than the worker (the pacer holds more behind it).
_QUEUE_FRAMES = 100
# A reader that takes nothing for this long has gone; the session ends.
_READER_TIMEOUT_S = 10.0
# Routing, a model load on demand (Kokoro takes seconds) and the stream's opening.
_START_TIMEOUT_S = 70.0
# After a clause's punctuation (ASCII, and the CJK full stop, exclamation and question marks).
_SENTENCE_END = re.compile("[.!?;:,\u3002\uff01\uff1f]\\s")


class ApiKind(StrEnum):
    """The compatible APIs, as metric labels and as the sessions' transport name."""

    OPENAI = "openai"
    WYOMING = "wyoming"


@dataclass(frozen=True)
class SpeechRequest:
    """What to say and how: `model_id` None lets the router pick the worker's default;
    `text` None: the text is streamed (`SpeechStream.push`, then `finish`)."""

    text: str | None
    model_id: str | None
    language: str = "en"
    sample_rate: int = 24000
    speed: float = 1.0  # another rate routes to workers with the speed capability


class SpeechRefused(DuplexError):
    """The request was refused before any audio (unknown model, no worker, capacity, ...)."""


class SpeechFailed(DuplexError):
    """The speech stopped after audio had been sent (no worker left to finish it)."""


def unpaced(config: OrchestratorConfig) -> OrchestratorConfig:
    """`config` for sessions that deliver audio as fast as it is made (see the module doc)."""
    lead = max(config.session.worker_lead_ms, API_WORKER_LEAD_MS)
    session = replace(config.session, output_lead_ms=_UNPACED_LEAD_MS, worker_lead_ms=lead)
    # No mic audio comes on these sessions: the light VAD engine, never a second silero.
    vad = replace(config.vad, engine="webrtc")
    return replace(config, session=session, vad=vad)


def split_text(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut after a clause or a word."""
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max((m.end() for m in _SENTENCE_END.finditer(window)), default=0)
        if cut == 0:
            cut = window.rfind(" ") + 1
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut])
        text = text[cut:]
    if text.strip() or not pieces:
        pieces.append(text)
    return pieces


class _InputDone:
    """Queued when streamed input ends, so that a reader waiting for audio looks again."""


_Item = PcmFrame | ServerMessage | _InputDone


class _QueueSink:
    """The session's audio and message sink: everything in order into one bounded queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(_QUEUE_FRAMES)
        self.broken = False

    async def send(self, frame: PcmFrame) -> None:
        await self._put(frame)

    def clear(self) -> int:
        return 0  # nothing interrupts a one-shot request; frames queued are the reader's

    async def send_message(self, message: ServerMessage) -> None:
        await self._put(message)

    async def input_done(self) -> None:
        await self._put(_InputDone())

    async def _put(self, item: _Item) -> None:
        if self.broken:
            return
        try:
            async with asyncio.timeout(_READER_TIMEOUT_S):
                await self.queue.put(item)
        except TimeoutError:
            log.info("speech reader stopped taking audio; dropping the rest")
            self.broken = True


class SpeechStream:
    """One request's session: `frames()` yields its audio, then the stream is closed."""

    def __init__(self, connection: ClientConnection, sink: _QueueSink, max_chars: int) -> None:
        self._conn = connection
        self._sink = sink
        self._max_chars = max_chars
        self._utterances = 0  # utterances handed over whole (their AudioEnd is awaited)
        self._open_chars = 0  # streamed text in the utterance not yet final
        self._input_done = False
        self.completed = False
        self.failovers: list[tuple[str, str]] = []

    @property
    def session_id(self) -> str:
        return self._conn.session_id or ""

    @property
    def worker(self) -> str:
        session = self._conn.session
        return (session.worker if session is not None else None) or ""

    @property
    def model_id(self) -> str:
        session = self._conn.session
        return session.model if session is not None else ""

    async def say(self, text: str) -> None:
        """Hand over the whole text (as utterances the worker accepts); input ends."""
        for piece in split_text(text, self._max_chars):
            await self._conn.receive(TextChunk(piece, is_final=True))
            self._utterances += 1
        self._input_done = True

    async def push(self, text: str) -> None:
        """Streamed text (Wyoming's synthesize-chunk): added to the open utterance, which
        is ended first when the text would take it past the worker's limit."""
        pieces = split_text(text, self._max_chars) if text else []
        for index, piece in enumerate(pieces):
            if self._open_chars + len(piece) > self._max_chars:
                await self._end_utterance()
            whole = index < len(pieces) - 1  # a full piece of a long chunk: its own utterance
            await self._conn.receive(TextChunk(piece, is_final=whole))
            if whole:
                self._utterances += 1
            else:
                self._open_chars += len(piece)

    async def finish(self) -> None:
        """Streamed input ends: the open utterance is final, `frames()` ends after it."""
        await self._end_utterance()
        self._input_done = True
        await self._sink.input_done()

    async def _end_utterance(self) -> None:
        if self._open_chars:
            await self._conn.receive(TextChunk("", is_final=True))
            self._utterances += 1
            self._open_chars = 0

    async def frames(self) -> AsyncIterator[PcmFrame]:
        """The audio, frame by frame, until input ended and its last utterance ended;
        SpeechFailed if the session ends first, SpeechRefused for an error before any audio."""
        ended = 0
        sent = False
        while not self._input_done or ended < self._utterances:
            try:
                async with asyncio.timeout(_START_TIMEOUT_S):
                    item = await self._sink.queue.get()
            except TimeoutError:
                raise SpeechFailed(ErrorCode.WORKER_FAILED, "no audio came in time") from None
            if isinstance(item, PcmFrame):
                sent = True
                yield item
            elif isinstance(item, AudioEnd):
                ended += 1
            elif isinstance(item, WorkerFailover):
                self.failovers.append((item.from_worker, item.to_worker))
            elif isinstance(item, Error | SessionEnded):
                code = item.code if isinstance(item, Error) else ErrorCode.WORKER_FAILED
                message = item.message if isinstance(item, Error) else f"ended: {item.reason}"
                raise (SpeechFailed if sent else SpeechRefused)(code, message)
        self.completed = True

    async def close(self) -> None:
        await self._conn.end("client_end" if self.completed else "disconnected")


class SpeechService:
    """The compatible APIs' way into the session layer (built by the app's lifespan)."""

    def __init__(self, services: SessionServices, view: RegistryView) -> None:
        self.services = services
        self.metrics = services.metrics
        self.config = services.config
        self._view = view
        self.hub = SessionHub(replace(services, config=unpaced(services.config)))

    def models(self) -> list[dict[str, object]]:
        """The fleet's models now, as the demo page's `/api/models` lists them."""
        return models_from_workers(self._view.workers(), self._view.drained())

    def can_change_speed(self, model_id: str) -> bool:
        """Whether a live, undrained worker that offers `model_id` can change its rate."""
        drained = set(self._view.drained())
        return any(
            "speed" in record.capabilities.names()
            for name, record in self._view.workers().items()
            if name not in drained
            and model_id in (record.available_models or record.resident_models)
        )

    def summaries(self) -> list[SessionSummary]:
        return self.hub.summaries()

    @contextlib.asynccontextmanager
    async def speak(self, kind: ApiKind, request: SpeechRequest) -> AsyncIterator[SpeechStream]:
        """A started session for `request` (SpeechRefused if none); ended on exit."""
        sink = _QueueSink()
        channel = ClientChannel(TransportKind(kind.value), sink, sink)
        try:
            connection = self.hub.open(channel)
        except DuplexError as exc:
            raise SpeechRefused(exc.code, exc.message) from exc
        start = SessionStart(
            model_id=request.model_id,
            language=request.language,
            sample_rate=request.sample_rate,
            speed=None if request.speed == 1.0 else request.speed,
        )
        stream: SpeechStream | None = None
        try:
            await connection.receive(start)
            try:
                async with asyncio.timeout(_START_TIMEOUT_S):
                    first = await sink.queue.get()
            except TimeoutError:
                raise SpeechRefused(ErrorCode.WORKER_FAILED, "the session did not start") from None
            if isinstance(first, Error):
                raise SpeechRefused(first.code, first.message)
            if not isinstance(first, SessionStarted):
                raise SpeechRefused(ErrorCode.INTERNAL, f"unexpected {type(first).__name__}")
            stream = SpeechStream(connection, sink, self._max_chars(connection))
            if request.text is not None:
                await stream.say(request.text)
            yield stream
        finally:
            if stream is not None:
                await stream.close()
            else:
                await connection.end("start_failed")

    async def close(self) -> None:
        await self.hub.close_all("shutdown")

    def _max_chars(self, connection: ClientConnection) -> int:
        limit = self.config.session.max_text_chars
        session = connection.session
        link = session.link if session is not None else None
        if link is not None and link.max_text_chars > 0:
            limit = min(limit, link.max_text_chars)
        return limit
