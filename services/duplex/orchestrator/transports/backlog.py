"""How much of a connection's output its client has not taken yet, and whether it stopped reading.

A client that stops reading is otherwise noticed only when the kernel's send buffer is full
(up to 4 MiB, about 45 s of 48 kHz audio), and uvicorn's WebSocket writes never wait, so its
user-space buffer then grows without a bound. The backlog toward a client is the bytes the
server's transport still holds (``get_write_buffer_size()``) plus the bytes the kernel has not
had acknowledged (``SIOCOUTQ``, Linux). It is sampled at most every `SAMPLE_INTERVAL_S` per
connection (a clock read per frame, an ioctl a few times a second), never per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import logging
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

SAMPLE_INTERVAL_S = 0.25
# The backlog must stay above the limit this long: a client that stalls for a moment (a GC
# pause, a tab in the background) catches up without being closed.
GRACE_S = 2.0
_LOG = logging.getLogger(__name__)
_SAMPLE_WIDTH = 2  # s16le
# A client closed for not reading gets this long to take its close frame; then the socket is
# aborted (uvicorn's own close timer only closes, which waits for the unread bytes forever).
CLOSE_FLUSH_S = 5.0
_CLOSE_FLUSH_POLL_S = 0.25
# SIOCOUTQ == TIOCOUTQ on Linux: unsent plus unacknowledged bytes of a TCP socket.
_SIOCOUTQ = 0x5411
_INT = struct.Struct("i")
_LINGER_ZERO = struct.pack("ii", 1, 0)


class Verdict(enum.Enum):
    """What a sample says about the client."""

    READING = "reading"
    BEHIND = "behind"  # above the limit, still within the grace period
    NOT_READING = "not_reading"


@runtime_checkable
class WriteTransport(Protocol):
    """What is used of a server's transport: asyncio's and uvloop's (which is no subclass of
    `asyncio.WriteTransport`) both have it."""

    def get_write_buffer_size(self) -> int: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...


class TransportBacklog:
    """Bytes queued toward one client: the transport's user-space buffer and the kernel's."""

    def __init__(self, transport: WriteTransport) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        fileno = sock.fileno() if sock is not None else -1
        self._fd = fileno if fileno >= 0 and sys.platform.startswith("linux") else -1

    @property
    def transport(self) -> WriteTransport:
        return self._transport

    def flushed(self) -> bool:
        """The server holds nothing more for the client (or the connection is gone)."""
        return self._transport.get_write_buffer_size() == 0 and (
            self._transport.is_closing() or self.bytes_queued() == 0
        )

    def abort(self) -> None:
        """Reset the connection: with a zero linger the kernel drops what the client did not
        take (a plain close of the socket would still send it all, then FIN)."""
        sock = self._transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        self._transport.abort()

    def bytes_queued(self) -> int:
        queued = self._transport.get_write_buffer_size()
        # A closed transport's descriptor number may already be another connection's.
        if self._fd >= 0 and not (queued == 0 and self._transport.is_closing()):
            try:
                queued += _INT.unpack(fcntl.ioctl(self._fd, _SIOCOUTQ, b"\0\0\0\0"))[0]
            except OSError:
                self._fd = -1  # closed or not a TCP socket: the user-space part only
        return queued


_UNWRAP_DEPTH = 4


def backlog_of(send: object) -> TransportBacklog | None:
    """The backlog of the connection behind an ASGI ``send``: uvicorn's is a bound method of
    its protocol, which holds the transport; Starlette passes it on wrapped in closures (a
    few levels are followed). None (no check) for any other server."""
    transport = _transport_behind(send)
    if transport is None:
        return None
    try:
        return TransportBacklog(transport)
    except (OSError, ValueError, AttributeError):
        return None


def _transport_behind(send: object) -> WriteTransport | None:
    transport = getattr(protocol_behind(send), "transport", None)
    return transport if isinstance(transport, WriteTransport) else None


def protocol_behind(send: object) -> object | None:
    """The server protocol whose bound method an ASGI ``send`` is (uvicorn's), through
    Starlette's wrapping closures; None when no object holding a transport is found."""
    level = [send]
    for _ in range(_UNWRAP_DEPTH):
        inner: list[object] = []
        for fn in level:
            owner = getattr(fn, "__self__", None)
            if isinstance(getattr(owner, "transport", None), WriteTransport):
                return owner
            for cell in getattr(fn, "__closure__", None) or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    if callable(cell.cell_contents):
                        inner.append(cell.cell_contents)
        level = inner
    return None


@dataclass(frozen=True)
class BacklogLimit:
    """The most unread audio a client may hold, and how long it may hold more."""

    max_backlog_ms: int
    grace_s: float = GRACE_S
    sample_interval_s: float = SAMPLE_INTERVAL_S

    def max_bytes(self, sample_rate: int) -> int:
        return self.max_backlog_ms * sample_rate * _SAMPLE_WIDTH // 1000


class BacklogCheck:
    """Samples a backlog (at most every `sample_interval_s`) and says when a client has held
    more than the limit for longer than the grace period (times are the caller's clock)."""

    def __init__(self, queued: Callable[[], int], limit: BacklogLimit) -> None:
        self._queued = queued
        self._limit = limit
        self._next_sample = 0.0
        self._over_since: float | None = None
        self._max_bytes = 0
        self._rate = 0
        self.last_bytes = 0

    @property
    def limit(self) -> BacklogLimit:
        return self._limit

    def due(self, now: float) -> bool:
        return now >= self._next_sample

    def sample(self, now: float, sample_rate: int) -> Verdict:
        """One sample; ``sample_rate`` is the rate of the audio being sent."""
        if sample_rate != self._rate:
            self._rate = sample_rate
            self._max_bytes = self._limit.max_bytes(sample_rate)
        self._next_sample = now + self._limit.sample_interval_s
        self.last_bytes = self._queued()
        if self.last_bytes <= self._max_bytes:
            self._over_since = None
            return Verdict.READING
        if self._over_since is None:
            self._over_since = now
        if now - self._over_since >= self._limit.grace_s:
            return Verdict.NOT_READING
        return Verdict.BEHIND

    def backlog_ms(self) -> float:
        """The last sample in milliseconds of audio."""
        if self._rate <= 0:
            return 0.0
        return self.last_bytes * 1000 / (self._rate * _SAMPLE_WIDTH)


class BacklogWatch:
    """The backlog check of one connection's audio sink, with the watchdog it starts once the
    client is behind: the sends sample while the client keeps up (no timer at all), the
    watchdog samples on its own (audio may have stopped) until the client catches up or the
    grace period ends, which sets `not_reading`."""

    def __init__(self, backlog: TransportBacklog, limit: BacklogLimit) -> None:
        self.backlog = backlog
        self.check = BacklogCheck(backlog.bytes_queued, limit)
        self.not_reading = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, send: object, limit: BacklogLimit | None) -> BacklogWatch | None:
        """A watch of the connection behind ``send``; None when off or out of reach."""
        if limit is None or limit.max_backlog_ms <= 0:
            return None
        backlog = backlog_of(send)
        return cls(backlog, limit) if backlog is not None else None

    def on_audio(self, sample_rate: int) -> bool:
        """Before each audio send (the hot path: a clock read); False: drop the audio."""
        if self.not_reading.is_set():
            return False
        watchdog = self._watchdog
        if watchdog is None or watchdog.done():
            now = self._loop.time()
            check = self.check
            if check.due(now) and check.sample(now, sample_rate) is not Verdict.READING:
                self._watchdog = asyncio.create_task(self._watch(sample_rate), name="ws-backlog")
        return True

    def backlog_ms(self) -> float:
        return self.check.backlog_ms()

    async def _watch(self, sample_rate: int) -> None:
        check = self.check
        while True:
            await asyncio.sleep(check.limit.sample_interval_s)
            verdict = check.sample(self._loop.time(), sample_rate)
            if verdict is Verdict.READING:
                return
            if verdict is Verdict.NOT_READING:
                self.not_reading.set()
                return

    async def close_or_abort(self, flush_s: float = CLOSE_FLUSH_S) -> None:
        """After the close frame: give the client ``flush_s`` to take what is queued, then
        abort the socket (a graceful close would wait for it forever)."""
        for _ in range(round(flush_s / _CLOSE_FLUSH_POLL_S)):
            if self.backlog.flushed():
                return
            await asyncio.sleep(_CLOSE_FLUSH_POLL_S)
        if self.backlog.flushed():
            return
        queued = self.backlog.bytes_queued()
        _LOG.info("client took no close frame, aborting the connection",
                  extra={"backlog_bytes": queued})  # fmt: skip
        self.backlog.abort()

    async def aclose(self) -> None:
        """Stops the watchdog (the connection is over)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog


__all__ = [
    "BacklogCheck",
    "BacklogLimit",
    "BacklogWatch",
    "TransportBacklog",
    "Verdict",
    "backlog_of",
    "protocol_behind",
]
