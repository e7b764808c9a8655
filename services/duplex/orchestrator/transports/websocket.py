"""The WebSocket transport: JSON and binary messages <-> `Session` calls.

No business logic lives here: this module parses client messages, calls the session,
and turns outcomes into wire messages and close codes:

- 1000: the session ended normally (client_end, idle timeout, a fatal session error
  after its `Error` + `SessionEnded`);
- 1001: the orchestrator is shutting down (after `SessionEnded {reason: "shutdown"}`);
- 1009: a message over `max_message_bytes` (after `Error MESSAGE_TOO_LARGE`);
- 1011: an internal error (after `Error INTERNAL`);
- 1013: beyond `max_connections` (after `Error CAPACITY`): try again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TypeVar

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from duplex.orchestrator.protocol import (
    Control,
    Error,
    ErrorCode,
    ProtocolError,
    ServerMessage,
    SessionEnd,
    SessionEnded,
    SessionStart,
    TextChunk,
    parse_client_message,
)
from duplex.orchestrator.session import Session, SessionError, SessionServices, SessionState

_LOG = logging.getLogger(__name__)

# A client that has not taken a message for this long is treated as gone.
_SEND_TIMEOUT_S = 5.0
# Closing handshakes and goodbyes must not hold a shutdown for long.
_CLOSE_TIMEOUT_S = 2.0
_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError, TimeoutError)

_Payload = TypeVar("_Payload", str, bytes)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_LARGE = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013


class WebSocketSink:
    """The `ClientSink` of one connection: one writer at a time, every send with a deadline.

    A failed or timed-out send marks the sink broken (the connection then ends) and is not
    raised: the session's sender must not die because a client went away.
    """

    def __init__(self, websocket: WebSocket, on_error: Callable[[ErrorCode], None]) -> None:
        self._ws = websocket
        self._on_error = on_error
        self._lock = asyncio.Lock()
        self.broken = asyncio.Event()

    async def send_message(self, message: ServerMessage) -> None:
        if isinstance(message, Error):
            self._on_error(message.code)
        await self._send(self._ws.send_text, message.to_json())

    async def send_audio(self, pcm: bytes) -> None:
        await self._send(self._ws.send_bytes, pcm)

    async def _send(self, send: Callable[[_Payload], Awaitable[None]], payload: _Payload) -> None:
        if self.broken.is_set():
            return
        try:
            async with asyncio.timeout(_SEND_TIMEOUT_S), self._lock:
                await send(payload)
        except _SEND_ERRORS as exc:
            if not self.broken.is_set():
                _LOG.info("client send failed, ending the connection: %s", type(exc).__name__)
            self.broken.set()


class _Next(Enum):
    CONTINUE = "continue"
    STOP = "stop"


class WebSocketTransport:
    """Runs one session per WebSocket connection, up to `max_connections` at once."""

    def __init__(self, services: SessionServices) -> None:
        self._services = services
        ws = services.config.transport.websocket
        self._max_connections = ws.max_connections
        self._idle_timeout_s = ws.idle_timeout_s
        self._connections: set[_Connection] = set()
        self._closing = False

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    async def handle(self, websocket: WebSocket) -> None:
        """The ASGI WebSocket endpoint; returns when the connection is over."""
        if self._closing:
            await websocket.close(CLOSE_GOING_AWAY)  # before accept: the handshake fails
            return
        await websocket.accept()
        metrics = self._services.metrics
        if len(self._connections) >= self._max_connections:
            metrics.ws_connections_rejected_total.inc()
            metrics.protocol_errors_total.labels(code=ErrorCode.CAPACITY.value).inc()
            _LOG.warning("connection refused: max_connections reached",
                         extra={"max_connections": self._max_connections})  # fmt: skip
            message = (
                f"the orchestrator is at max_connections ({self._max_connections}); try again later"
            )
            with contextlib.suppress(*_SEND_ERRORS):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await websocket.send_text(Error(ErrorCode.CAPACITY, message).to_json())
                    await websocket.close(CLOSE_TRY_AGAIN_LATER, "max_connections reached")
            return
        connection = _Connection(websocket, self._services, self._idle_timeout_s)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    async def close_all(self, reason: str = "shutdown") -> None:
        """Refuse new connections and end every live one with `SessionEnded {reason}`."""
        self._closing = True
        connections = list(self._connections)
        if connections:
            _LOG.info("closing live connections", extra={"count": len(connections)})
            await asyncio.gather(*(c.shutdown(reason) for c in connections))


class _Connection:
    """One client connection: the read loop and the session it owns."""

    def __init__(
        self,
        websocket: WebSocket,
        services: SessionServices,
        idle_timeout_s: float,
    ) -> None:
        self._ws = websocket
        self._services = services
        self._limits = services.config.protocol_limits()
        self._idle_timeout_s = idle_timeout_s
        self._metrics = services.metrics
        self._sink = WebSocketSink(websocket, self._count_error)
        self._session: Session | None = None
        self._session_id: str | None = None
        self._session_started = False
        self._ended = False
        self._shutdown = asyncio.Event()
        self._shutdown_reason = "shutdown"
        self._done = asyncio.Event()

    def _count_error(self, code: ErrorCode) -> None:
        self._metrics.protocol_errors_total.labels(code=code.value).inc()

    async def shutdown(self, reason: str) -> None:
        """Ask the read loop to end the session with `reason` and wait until it has."""
        self._shutdown_reason = reason
        self._shutdown.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S * 2):
                await self._done.wait()

    async def run(self) -> None:
        try:
            await self._read_loop()
        except Exception:
            # A task boundary: a bug must end this connection only, and loudly.
            _LOG.exception("connection failed", extra=self._log_fields())
            await self._end(
                "internal_error",
                CLOSE_INTERNAL,
                Error(ErrorCode.INTERNAL, "internal error; the session has ended"),
            )
        finally:
            if not self._ended:
                # The client went away (or the task was cancelled): no goodbye to send.
                await self._close_session("disconnected")
            self._done.set()

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle_timeout_s
        broken = asyncio.create_task(self._sink.broken.wait(), name="ws-sink-broken")
        shutdown = asyncio.create_task(self._shutdown.wait(), name="ws-shutdown")
        receive: asyncio.Task[Message] | None = None
        ended: asyncio.Task[str] | None = None
        try:
            while True:
                if receive is None:
                    receive = asyncio.create_task(self._ws.receive(), name="ws-receive")
                if ended is None and self._session is not None and self._session_started:
                    ended = asyncio.create_task(self._session.wait_closed(), name="ws-ended")
                waiting = {t for t in (receive, broken, shutdown, ended) if t is not None}
                timeout = max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if shutdown in done:
                    await self._end(self._shutdown_reason, CLOSE_GOING_AWAY)
                    return
                if broken in done:
                    await self._close_session("disconnected")
                    return
                if receive in done:
                    message = receive.result()
                    receive = None
                    if message["type"] == "websocket.disconnect":
                        await self._close_session("disconnected")
                        return
                    deadline = loop.time() + self._idle_timeout_s
                    if await self._on_message(message) is _Next.STOP:
                        return
                    continue
                if ended is not None and ended in done:
                    # The session ended by itself (e.g. its worker failed with no failover).
                    await self._end(ended.result(), CLOSE_NORMAL)
                    return
                if not done:
                    session = self._session
                    if session is not None and session.state is SessionState.SPEAKING:
                        # A client listening to a long answer is not idle.
                        deadline = loop.time() + self._idle_timeout_s
                        continue
                    await self._end("idle_timeout", CLOSE_NORMAL)
                    return
        finally:
            for task in (receive, broken, shutdown, ended):
                if task is not None:
                    task.cancel()
            for task in (receive, broken, shutdown, ended):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _on_message(self, message: Message) -> _Next:
        text = message.get("text")
        data = message.get("bytes")
        if not isinstance(text, str):
            return await self._on_binary(data if isinstance(data, bytes) else b"")
        try:
            parsed = parse_client_message(text, self._limits)
        except ProtocolError as exc:
            return await self._protocol_error(exc)
        if isinstance(parsed, SessionStart):
            return await self._on_start(parsed)
        if isinstance(parsed, SessionEnd):
            await self._end("client_end", CLOSE_NORMAL)
            return _Next.STOP
        session = self._session
        if session is None or not self._session_started:
            await self._send_error(ErrorCode.NOT_STARTED, "send SessionStart first")
            return _Next.CONTINUE
        try:
            if isinstance(parsed, TextChunk):
                await session.on_text(parsed)
            elif isinstance(parsed, Control):
                await session.on_control(parsed)
        except SessionError as exc:
            return await self._session_error(exc)
        return _Next.CONTINUE

    async def _on_binary(self, data: bytes) -> _Next:
        if len(data) > self._limits.max_message_bytes:
            return await self._protocol_error(
                ProtocolError(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"message is {len(data)} bytes; the limit is "
                    f"{self._limits.max_message_bytes} bytes",
                )
            )
        if self._session is None:
            await self._send_error(
                ErrorCode.NOT_STARTED, "send SessionStart (a JSON text message) first"
            )
        else:
            await self._send_error(
                ErrorCode.INVALID_MESSAGE, "binary audio input is not supported yet"
            )
        return _Next.CONTINUE

    async def _protocol_error(self, exc: ProtocolError) -> _Next:
        if exc.code is ErrorCode.MESSAGE_TOO_LARGE:
            await self._end("message_too_large", CLOSE_TOO_LARGE, Error(exc.code, exc.message))
            return _Next.STOP
        await self._send_error(exc.code, exc.message)
        return _Next.CONTINUE

    async def _on_start(self, start: SessionStart) -> _Next:
        if self._session is not None:
            await self._send_error(
                ErrorCode.ALREADY_STARTED, "this connection already has a session"
            )
            return _Next.CONTINUE
        self._session_id = uuid.uuid4().hex
        session = Session(self._session_id, self._sink, self._services)
        self._session = session
        try:
            started = await session.start(start)
        except SessionError as exc:
            if exc.fatal:
                await self._end(exc.code.value.lower(), CLOSE_NORMAL, Error(exc.code, exc.message))
                return _Next.STOP
            # The client may try again (another model, language or rate) on this connection.
            await session.close("start_failed")
            self._metrics.sessions_total.labels(outcome="start_failed").inc()
            self._session = None
            await self._send_error(exc.code, exc.message)
            return _Next.CONTINUE
        self._session_started = True
        self._metrics.sessions_active.inc()
        _LOG.info("session started", extra=self._log_fields(worker=started.worker,
                                                            model_id=started.model_id))  # fmt: skip
        await self._sink.send_message(started)
        return _Next.CONTINUE

    async def _session_error(self, exc: SessionError) -> _Next:
        if exc.fatal:
            await self._end(exc.code.value.lower(), CLOSE_NORMAL, Error(exc.code, exc.message))
            return _Next.STOP
        await self._send_error(exc.code, exc.message)
        return _Next.CONTINUE

    async def _send_error(self, code: ErrorCode, message: str) -> None:
        await self._sink.send_message(Error(code, message))

    async def _end(self, reason: str, close_code: int, error: Error | None = None) -> None:
        """End the connection: stop the session, then Error?, SessionEnded, close."""
        if self._ended:
            return
        await self._close_session(reason)
        if error is not None:
            await self._sink.send_message(error)
        await self._sink.send_message(SessionEnded(reason))
        with contextlib.suppress(*_SEND_ERRORS):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self._ws.close(close_code)

    async def _close_session(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        session = self._session
        if session is not None:
            await session.close(reason)
            # Failed starts count too (outcome unknown_model, no_worker_available, ...).
            self._metrics.sessions_total.labels(outcome=reason).inc()
            if self._session_started:
                self._metrics.sessions_active.dec()
        _LOG.info("connection ended", extra=self._log_fields(reason=reason))

    def _log_fields(self, **extra: object) -> dict[str, object]:
        fields: dict[str, object] = dict(extra)
        if self._session_id is not None:
            fields["session_id"] = self._session_id
        return fields
