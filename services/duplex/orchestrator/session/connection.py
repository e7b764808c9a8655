"""One client connection as the session layer sees it, whatever the transport.

A transport parses its wire and calls `receive` (protocol messages), `receive_audio` (mic
frames) and `reject` (input that did not parse); the connection runs the session's
lifecycle: the session id, routing on `SessionStart`, errors as `Error` messages, the
`sessions_active`/`sessions_total` metrics, the "session started" log, and the goodbye
(`Error`?, `SessionEnded`). `wait_ended()` tells the transport when to close its wire.

An agent's backend may attach to a live session (the agent's channel): it receives the
session's events and may send `TextChunk` and `Control`, while the client holds the audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from duplex.audio.frames import PcmFrame
from duplex.audio.mic import MicFrameError
from duplex.audio.vad import SileroModel
from duplex.orchestrator.protocol import (
    ClientMessage,
    Control,
    Error,
    ErrorCode,
    ProtocolError,
    ServerMessage,
    SessionEnd,
    SessionEnded,
    SessionStart,
    TextChunk,
)
from duplex.orchestrator.session.bargein import BargeInSettings, Listener, Transcriber
from duplex.orchestrator.session.core import Session, SessionError
from duplex.orchestrator.session.services import SessionServices
from duplex.orchestrator.session.state import SessionState
from duplex.orchestrator.transports.base import ClientChannel, MessageSink
from duplex.registry.orchestrators import SessionSummary

log = logging.getLogger(__name__)

# A client streaming bad audio gets one Error a second, not one per frame.
_AUDIO_ERROR_INTERVAL_S = 1.0


class _Fanout:
    """The session's message sink: the client, plus any attached agent channels."""

    def __init__(self, client: MessageSink, count_error: Callable[[ErrorCode], None]) -> None:
        self._client = client
        self._count_error = count_error
        self.agents: set[MessageSink] = set()

    async def send_message(self, message: ServerMessage) -> None:
        if isinstance(message, Error):
            self._count_error(message.code)
        await self._client.send_message(message)
        for agent in list(self.agents):
            await agent.send_message(message)


class ClientConnection:
    """Runs the session of one client connection; see the module docstring."""

    def __init__(
        self,
        channel: ClientChannel,
        services: SessionServices,
        *,
        on_started: Callable[[ClientConnection], None],
        on_ended: Callable[[ClientConnection], None],
        transcriber: Transcriber | None = None,
        silero_model: SileroModel | None = None,
    ) -> None:
        self._services = services
        self._silero_model = silero_model
        self._metrics = services.metrics
        self._fanout = _Fanout(channel.messages, self._count_error)
        self._channel = ClientChannel(
            channel.kind, channel.audio, self._fanout, channel.input_sample_rate
        )
        self._on_started = on_started
        self._on_ended = on_ended
        self._transcriber = transcriber
        self.session_id: str | None = None
        self.session: Session | None = None
        self._listener: Listener | None = None
        self._started = False
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._ending = False
        self._watch: asyncio.Task[None] | None = None
        self._last_audio_error = 0.0
        self._started_at = time.time()

    @property
    def kind(self) -> str:
        return self._channel.kind.value

    @property
    def ended(self) -> bool:
        return self._ending

    @property
    def busy(self) -> bool:
        """The client is listening to audio (so not idle, though it sends nothing)."""
        session = self.session
        return session is not None and session.state in (
            SessionState.SPEAKING,
            SessionState.BARGED_IN,
        )

    def summary(self) -> SessionSummary | None:
        """The live session as a console shows it; None before it started."""
        session = self.session
        if session is None or not self._started or session.session_id is None:
            return None
        return SessionSummary(
            session_id=session.session_id,
            transport=self.kind,
            worker=session.worker or "",
            model_id=session.model,
            state=session.state.value,
            started_at=self._started_at,
            first_audio_ms=session.first_audio_ms,
            barge_ins=self._listener.barge_ins if self._listener is not None else 0,
        )

    @property
    def input_rate(self) -> int | None:
        """The rate mic frames must have; None until the session has started."""
        return self._listener.input_rate if self._listener is not None else None

    async def wait_ended(self) -> str:
        return await asyncio.shield(self._ended)

    # -- input from the transport ---------------------------------------------------------

    async def receive(self, message: ClientMessage) -> None:
        if self._ending:
            return
        if isinstance(message, SessionStart):
            await self._start(message)
            return
        if isinstance(message, SessionEnd):
            await self.end("client_end")
            return
        await self.receive_from_agent(message)

    async def receive_from_agent(self, message: TextChunk | Control) -> None:
        """`TextChunk` / `Control` from the client or from an attached agent."""
        session = self.session
        if session is None or not self._started:
            await self._send_error(ErrorCode.NOT_STARTED, "send SessionStart first")
            return
        try:
            if isinstance(message, TextChunk):
                await session.on_text(message)
            else:
                await session.on_control(message)
        except SessionError as exc:
            await self._session_error(exc)

    async def receive_audio(self, frame: PcmFrame) -> None:
        """One 20 ms frame of mic audio."""
        if self._ending:
            return
        listener = self._listener
        if listener is None:
            await self._audio_error(ErrorCode.NOT_STARTED, "send SessionStart before mic audio")
            return
        self._metrics.mic_frames_total.labels(transport=self.kind).inc()
        try:
            await listener.push(frame)
        except MicFrameError as exc:
            await self.reject_audio(str(exc))

    async def reject_audio(self, why: str) -> None:
        """Mic audio the session cannot take: `Error INVALID_AUDIO`, at most one a second."""
        await self._audio_error(ErrorCode.INVALID_AUDIO, f"mic audio: {why}")

    async def reject(self, error: ProtocolError) -> None:
        """Input that did not parse: `Error`; a message over the size limit ends the session."""
        if error.code is ErrorCode.MESSAGE_TOO_LARGE:
            await self.end("message_too_large", Error(error.code, error.message))
            return
        await self._send_error(error.code, error.message)

    def attach_agent(self, sink: MessageSink) -> None:
        self._fanout.agents.add(sink)

    def detach_agent(self, sink: MessageSink) -> None:
        self._fanout.agents.discard(sink)

    # -- ending ---------------------------------------------------------------------------

    async def end(self, reason: str, error: Error | None = None) -> None:
        """End the connection once: the session closes, then `Error`?, `SessionEnded` (not
        to a client that went away)."""
        if self._ending:
            return
        self._ending = True
        watch, self._watch = self._watch, None
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if self._listener is not None:
            await self._listener.close()
        session = self.session
        if session is not None:
            await session.close(reason)
            # Failed starts count too (outcome unknown_model, no_worker_available, ...).
            self._metrics.sessions_total.labels(transport=self.kind, outcome=reason).inc()
            if self._started:
                self._metrics.sessions_active.labels(transport=self.kind).dec()
        if reason != "disconnected":
            if error is not None:
                await self._fanout.send_message(error)
            await self._fanout.send_message(SessionEnded(reason))
        log.info("connection ended", extra=self._fields(reason=reason, transport=self.kind))
        self._on_ended(self)
        if not self._ended.done():
            self._ended.set_result(reason)

    # -- internals ------------------------------------------------------------------------

    async def _start(self, start: SessionStart) -> None:
        if self.session is not None:
            await self._send_error(
                ErrorCode.ALREADY_STARTED, "this connection already has a session"
            )
            return
        self.session_id = uuid.uuid4().hex
        session = Session(self.session_id, self._channel, self._services)
        self.session = session
        try:
            started = await session.start(start)
            config = self._services.config
            input_rate = (
                self._channel.input_sample_rate or start.input_sample_rate or start.sample_rate
            )
            self._listener = Listener(
                session,
                BargeInSettings.resolve(config, start.barge_in),
                config,
                input_rate,
                self._metrics,
                transcriber=self._transcriber,
                silero_model=self._silero_model,
            )
        except SessionError as exc:
            if exc.fatal:
                await self.end(exc.code.value.lower(), Error(exc.code, exc.message))
                return
            # The client may try again (another model, language or rate) on this connection.
            await session.close("start_failed")
            self._metrics.sessions_total.labels(transport=self.kind, outcome="start_failed").inc()
            self.session = None
            self.session_id = None
            await self._send_error(exc.code, exc.message)
            return
        self._started = True
        self._started_at = time.time()
        self._metrics.sessions_active.labels(transport=self.kind).inc()
        self._on_started(self)
        self._watch = asyncio.create_task(self._watch_session(session), name="session-watch")
        log.info(
            "session started",
            extra=self._fields(worker=started.worker, model_id=started.model_id,
                               transport=self.kind),
        )  # fmt: skip
        await self._fanout.send_message(started)

    async def _watch_session(self, session: Session) -> None:
        """The session ended by itself (its worker failed with no failover, its pacer or its
        sink failed): the connection ends with the session's reason."""
        pacer = session.pacer_task
        waits: set[asyncio.Future[object]] = {asyncio.ensure_future(session.wait_closed())}
        if pacer is not None:
            waits.add(pacer)  # type: ignore[arg-type]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                if w is not pacer:
                    w.cancel()
        if pacer is not None and pacer in done and session.state is not SessionState.CLOSED:
            failure = None if pacer.cancelled() else pacer.exception()
            log.error(
                "session output failed",
                extra=self._fields(error=repr(failure)),
            )
            await self.end("output_failed", Error(ErrorCode.INTERNAL, "the audio output failed"))
            return
        await self.end(await session.wait_closed())

    async def _session_error(self, exc: SessionError) -> None:
        if exc.fatal:
            await self.end(exc.code.value.lower(), Error(exc.code, exc.message))
        else:
            await self._send_error(exc.code, exc.message)

    async def _send_error(self, code: ErrorCode, message: str) -> None:
        await self._fanout.send_message(Error(code, message))

    async def _audio_error(self, code: ErrorCode, message: str) -> None:
        now = time.monotonic()
        if now - self._last_audio_error >= _AUDIO_ERROR_INTERVAL_S:
            self._last_audio_error = now
            await self._send_error(code, message)

    def _count_error(self, code: ErrorCode) -> None:
        self._metrics.protocol_errors_total.labels(code=code.value).inc()

    def _fields(self, **extra: object) -> dict[str, object]:
        fields: dict[str, object] = dict(extra)
        if self.session_id is not None:
            fields["session_id"] = self.session_id
        return fields
