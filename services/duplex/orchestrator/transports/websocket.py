"""The WebSocket transport: JSON and binary messages <-> a `ClientConnection`.

No business logic lives here: this module parses client messages (JSON text) and mic audio
(binary: s16le mono 20 ms frames at the session's input rate), hands them to the session
layer, sends what the session sends, and turns the end of a connection into a close code:

- 1000: the session ended normally (client_end, idle timeout, a fatal session error
  after its `Error` + `SessionEnded`);
- 1001: the orchestrator is shutting down (after `SessionEnded {reason: "shutdown"}`);
- 1008 "client not reading": the audio queued toward the client stayed above
  `max_client_backlog_ms` for 2 s (after `Error CLIENT_TOO_SLOW` +
  `SessionEnded {reason: "client_not_reading"}`, queued behind the unread audio); the socket
  is aborted when the client has not taken them within 5 s;
- 1009: a message over `max_message_bytes` (after `Error MESSAGE_TOO_LARGE`);
- 1011: an internal error (after `Error INTERNAL`);
- 1013: beyond `max_connections` (after `Error CAPACITY`): retry later, with a back-off.

The agent's channel (`/sessions/{session_id}`) is here too: a backend attaches to a live
session of any transport, sends `TextChunk`/`Control` and receives the session's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine

from starlette.types import Message, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.errors import DuplexError
from duplex.orchestrator.protocol import (
    Control,
    Error,
    ErrorCode,
    ProtocolError,
    ProtocolLimits,
    ServerMessage,
    SessionEnded,
    TextChunk,
    parse_client_message,
)
from duplex.orchestrator.session.connection import ClientConnection
from duplex.orchestrator.session.hub import SessionHub
from duplex.orchestrator.session.pacer_clock import PacerClock, resume
from duplex.orchestrator.transports.backlog import BacklogLimit, BacklogWatch
from duplex.orchestrator.transports.base import ClientChannel, TransportKind
from duplex.orchestrator.transports.ws_direct import DirectBinaryWriter

_LOG = logging.getLogger(__name__)

# A client that has not taken a message for this long is treated as gone.
_SEND_TIMEOUT_S = 5.0
# Closing handshakes and goodbyes must not hold a shutdown for long.
_CLOSE_TIMEOUT_S = 2.0
_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError, TimeoutError)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_LARGE = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013

_CLOSE_CODES = {
    "shutdown": CLOSE_GOING_AWAY,
    "message_too_large": CLOSE_TOO_LARGE,
    "internal_error": CLOSE_INTERNAL,
    "output_failed": CLOSE_INTERNAL,
    "client_not_reading": CLOSE_POLICY_VIOLATION,
}
_CLOSE_REASONS = {"client_not_reading": "client not reading"}


class WebSocketSink:
    """Audio and message sink of one connection: one writer at a time, every wait with a
    deadline. A failed or timed-out send marks the sink broken (the connection then ends)
    and is not raised: the session's sender must not die because a client went away.

    Sends go straight to the ASGI ``send`` (Starlette's per-message checks cost more than the
    write itself at 50 frames a second per session). uvicorn writes a message to its transport
    without waiting, so a send normally completes in its first step: no timer and no lock are
    needed then. A server that makes a send wait (flow control) gets the lock and the deadline.

    With a `BacklogLimit` (and uvicorn's transport within reach) audio sends also sample the
    bytes still queued toward the client, at most every 250 ms; once above the limit a
    watchdog samples on its own (audio may have stopped) until the client catches up or the
    grace period ends: then `not_reading` is set and further audio is dropped.

    Audio on a plainly open uvicorn connection skips even the ASGI send: one
    ``transport.write`` of the frame (`DirectBinaryWriter`); text, closes and audio in any
    other state (a send waiting on flow control included) take the ASGI path, in order.
    """

    def __init__(self, websocket: WebSocket, backlog_limit: BacklogLimit | None = None) -> None:
        self._ws = websocket
        self._asgi_send: Send = websocket._send
        self._lock = asyncio.Lock()
        self.broken = asyncio.Event()
        # Set once the client has left its audio unread past the limit (see BacklogWatch).
        self.watch = BacklogWatch.of(self._asgi_send, backlog_limit)
        self.not_reading = self.watch.not_reading if self.watch else asyncio.Event()
        self._direct = DirectBinaryWriter.of(self._asgi_send)

    async def send_message(self, message: ServerMessage) -> None:
        await self._send({"type": "websocket.send", "text": message.to_json()})

    async def send(self, frame: PcmFrame) -> None:
        watch = self.watch
        if watch is not None and not watch.on_audio(frame.sample_rate):
            return  # the connection is closing: audio would only pile up behind the goodbye
        direct = self._direct
        if (
            direct is not None
            and not self._lock.locked()  # a send waits: the audio goes behind it
            and not self.broken.is_set()
            and direct.write(frame.pcm)
        ):
            return
        await self._send({"type": "websocket.send", "bytes": frame.pcm})

    async def aclose(self) -> None:
        """Stops the backlog watch (the connection is over)."""
        if self.watch is not None:
            await self.watch.aclose()

    def clear(self) -> int:
        # Frames already written are the client's: it drops its playback on BargeIn.
        return 0

    async def _send(self, message: Message) -> None:
        if self.broken.is_set():
            return
        try:
            if self._lock.locked():
                async with asyncio.timeout(_SEND_TIMEOUT_S), self._lock:
                    await self._asgi_send(message)
                return
            sending = self._asgi_send(message)
            if not isinstance(sending, Coroutine):
                async with asyncio.timeout(_SEND_TIMEOUT_S), self._lock:
                    await sending
                return
            try:
                waiting_on = sending.send(None)
            except StopIteration:
                return  # written without waiting: the usual case
            async with asyncio.timeout(_SEND_TIMEOUT_S), self._lock:
                await resume(sending, waiting_on)
        except _SEND_ERRORS as exc:
            if not self.broken.is_set():
                _LOG.info("client send failed, ending the connection",
                          extra={"error": type(exc).__name__})  # fmt: skip
            self.broken.set()


class WebSocketTransport:
    """Runs one client connection per WebSocket; the hub counts them with every transport's."""

    def __init__(self, hub: SessionHub) -> None:
        self._hub = hub
        config = hub.services.config
        self._idle_timeout_s = config.transport.websocket.idle_timeout_s
        self._backlog_limit = BacklogLimit(config.transport.websocket.max_client_backlog_ms)
        self._metrics = hub.services.metrics
        self._limits = config.protocol_limits()
        self._readers: set[asyncio.Task[None]] = set()
        # One timer paces every connection's audio (see session.pacer_clock).
        self._pacer_clock = PacerClock()

    async def wait_closed(self, timeout_s: float = _CLOSE_TIMEOUT_S * 2) -> None:
        """Until every connection has said goodbye and closed its socket (after the hub ended
        them at shutdown), so the server does not drop them first with a bare 1012."""
        readers = set(self._readers)
        if readers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.wait(readers)
        await self._pacer_clock.aclose()

    async def handle(self, websocket: WebSocket) -> None:
        """The ASGI endpoint at "/"; returns when the connection is over."""
        if self._hub.closing:
            await websocket.close(CLOSE_GOING_AWAY)  # before accept: the handshake fails
            return
        await websocket.accept()
        sink = WebSocketSink(websocket, self._backlog_limit)
        try:
            connection = self._hub.open(
                ClientChannel(TransportKind.WEBSOCKET, sink, sink, pacer_clock=self._pacer_clock)
            )
        except DuplexError as exc:
            with contextlib.suppress(*_SEND_ERRORS):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await websocket.send_text(Error(exc.code, exc.message).to_json())
                    await websocket.close(CLOSE_TRY_AGAIN_LATER, "max_connections reached")
            return
        reader = _Reader(websocket, sink, connection, self._limits, self._idle_timeout_s)
        task = asyncio.current_task()
        assert task is not None
        self._readers.add(task)
        try:
            reason = await reader.run()
            if reason == "client_not_reading":
                self._metrics.ws_clients_not_reading_total.inc()
                if sink.watch is not None:
                    await sink.watch.close_or_abort()
        finally:
            self._readers.discard(task)
            await sink.aclose()

    async def handle_agent(self, websocket: WebSocket) -> None:
        """The agent's channel at "/sessions/{session_id}"."""
        session_id = str(websocket.path_params.get("session_id", ""))
        connection = self._hub.find(session_id)
        await websocket.accept()
        sink = WebSocketSink(websocket)
        if connection is None or connection.ended:
            await sink.send_message(
                Error(ErrorCode.UNKNOWN_SESSION, f"no live session {session_id[:64]!r}")
            )
            await _close(websocket, CLOSE_NORMAL)
            return
        connection.attach_agent(sink)
        try:
            await _AgentReader(websocket, sink, connection, self._limits).run()
        finally:
            connection.detach_agent(sink)


async def _close(websocket: WebSocket, code: int, reason: str | None = None) -> None:
    with contextlib.suppress(*_SEND_ERRORS):
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await websocket.close(code, reason)


class _Reader:
    """The read loop of one client connection."""

    def __init__(
        self,
        websocket: WebSocket,
        sink: WebSocketSink,
        connection: ClientConnection,
        limits: ProtocolLimits,
        idle_timeout_s: float,
    ) -> None:
        self._ws = websocket
        self._sink = sink
        self._conn = connection
        self._limits = limits
        self._idle_timeout_s = idle_timeout_s

    async def run(self) -> str:
        """Until the connection is over; returns the reason."""
        try:
            reason = await self._loop()
        except Exception:
            # A task boundary: a bug must end this connection only, and loudly.
            _LOG.exception("connection failed", extra={"session_id": self._conn.session_id})
            await self._conn.end(
                "internal_error", Error(ErrorCode.INTERNAL, "internal error; the session has ended")
            )
            reason = "internal_error"
        finally:
            # The client went away (or the task was cancelled): no goodbye to send.
            await self._conn.end("disconnected")
        if reason != "disconnected":
            await _close(
                self._ws, _CLOSE_CODES.get(reason, CLOSE_NORMAL), _CLOSE_REASONS.get(reason)
            )
        return reason

    async def _loop(self) -> str:
        """Until the connection is over; returns the reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle_timeout_s
        broken = asyncio.create_task(self._sink.broken.wait(), name="ws-sink-broken")
        ended = asyncio.create_task(self._conn.wait_ended(), name="ws-ended")
        stalled = asyncio.create_task(self._sink.not_reading.wait(), name="ws-not-reading")
        receive: asyncio.Task[Message] | None = None
        try:
            while True:
                if receive is None:
                    receive = asyncio.create_task(self._ws.receive(), name="ws-receive")
                timeout = max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    {receive, broken, ended, stalled},
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if ended in done:
                    return ended.result()
                if broken in done:
                    return "disconnected"
                if stalled in done:
                    return await self._not_reading()
                if receive in done:
                    message = receive.result()
                    receive = None
                    if message["type"] == "websocket.disconnect":
                        return "disconnected"
                    deadline = loop.time() + self._idle_timeout_s
                    await self._on_message(message)
                    continue
                if self._conn.busy:
                    # A client listening to a long answer is not idle.
                    deadline = loop.time() + self._idle_timeout_s
                    continue
                await self._conn.end("idle_timeout")
        finally:
            tasks = [t for t in (receive, broken, ended, stalled) if t is not None]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _not_reading(self) -> str:
        """The client has left its audio unread past the limit: end the session (the worker
        stream is released) and queue the goodbye behind that audio, for if it reads again."""
        watch = self._sink.watch
        backlog_ms = round(watch.backlog_ms()) if watch is not None else 0
        fields = {"session_id": self._conn.session_id, "backlog_ms": backlog_ms}
        _LOG.warning("client not reading, closing it", extra=fields)
        await self._conn.end(
            "client_not_reading",
            Error(
                ErrorCode.CLIENT_TOO_SLOW,
                f"the client left {backlog_ms} ms of audio unread; closing the connection",
            ),
        )
        return "client_not_reading"

    async def _on_message(self, message: Message) -> None:
        text = message.get("text")
        if isinstance(text, str):
            try:
                parsed = parse_client_message(text, self._limits)
            except ProtocolError as exc:
                await self._conn.reject(exc)
                return
            await self._conn.receive(parsed)
            return
        data = message.get("bytes")
        data = data if isinstance(data, bytes) else b""
        if len(data) > self._limits.max_message_bytes:
            await self._conn.reject(
                ProtocolError(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"message is {len(data)} bytes; the limit is "
                    f"{self._limits.max_message_bytes} bytes",
                )
            )
            return
        rate = self._conn.input_rate
        if rate is None:
            await self._conn.reject(
                ProtocolError(
                    ErrorCode.NOT_STARTED, "send SessionStart (a JSON text message) before audio"
                )
            )
            return
        if len(data) % 2:
            await self._conn.reject_audio(
                f"s16le mic audio has an even size, got {len(data)} bytes"
            )
            return
        await self._conn.receive_audio(PcmFrame(data, rate))


class _AgentReader:
    """The read loop of an agent's channel: TextChunk and Control into the session."""

    def __init__(
        self,
        websocket: WebSocket,
        sink: WebSocketSink,
        connection: ClientConnection,
        limits: ProtocolLimits,
    ) -> None:
        self._ws = websocket
        self._sink = sink
        self._conn = connection
        self._limits = limits

    async def run(self) -> None:
        ended = asyncio.create_task(self._conn.wait_ended(), name="agent-ended")
        broken = asyncio.create_task(self._sink.broken.wait(), name="agent-broken")
        receive: asyncio.Task[Message] | None = None
        try:
            while True:
                if receive is None:
                    receive = asyncio.create_task(self._ws.receive(), name="agent-receive")
                done, _ = await asyncio.wait(
                    {receive, ended, broken}, return_when=asyncio.FIRST_COMPLETED
                )
                if ended in done:
                    # The session's own SessionEnded reached this sink through the fan-out.
                    if not self._sink.broken.is_set() and ended.exception() is None:
                        await _close(self._ws, CLOSE_NORMAL)
                    return
                if broken in done:
                    return
                message = receive.result()
                receive = None
                if message["type"] == "websocket.disconnect":
                    return
                await self._on_message(message)
        finally:
            for task in (receive, ended, broken):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _on_message(self, message: Message) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            await self._error(ErrorCode.INVALID_MESSAGE, "the agent's channel takes JSON text")
            return
        try:
            parsed = parse_client_message(text, self._limits)
        except ProtocolError as exc:
            await self._error(exc.code, exc.message)
            return
        if not isinstance(parsed, TextChunk | Control):
            await self._error(
                ErrorCode.INVALID_MESSAGE,
                "the agent's channel takes TextChunk and Control; the client owns the session",
            )
            return
        await self._conn.receive_from_agent(parsed)

    async def _error(self, code: ErrorCode, message: str) -> None:
        await self._sink.send_message(Error(code, message))


__all__ = ["SessionEnded", "WebSocketSink", "WebSocketTransport"]
