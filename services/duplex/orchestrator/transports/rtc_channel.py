"""The `control` data channel of a WebRTC peer: protocol messages out and in.

Out: `ControlChannelSink` is the session's `MessageSink`. aiortc's `RTCDataChannel.send` only
queues (it never blocks and raises on a channel that is not open), so a send here waits, with a
deadline, while the channel's buffer is over a high-water mark, queues (bounded) until the
channel exists and is open, and marks the sink broken instead of raising when the channel is
gone.

In: aiortc emits `message` events from its SCTP reader; async handlers would run as unowned,
concurrent tasks and could reorder a client's messages. `ControlInbox` only queues them
(bounded) for the peer's one control task, which hands them to the session in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from aiortc import RTCDataChannel
from aiortc.exceptions import InvalidStateError

from duplex.orchestrator.protocol import ServerMessage

_LOG = logging.getLogger(__name__)

CONTROL_LABEL = "control"
# A client that has not taken this much for this long is treated as gone.
_HIGH_WATER_BYTES = 1 << 20
_SEND_TIMEOUT_S = 5.0
# Messages said before the channel opened (only goodbyes, in practice: SessionStart itself
# arrives on the channel).
_MAX_PENDING = 64
# Client messages not yet taken by the session; beyond it they are dropped and reported.
MAX_INBOX = 256


class ControlChannelSink:
    """The `MessageSink` of one WebRTC peer: `message.to_json()` on the `control` channel."""

    def __init__(self, *, send_timeout_s: float = _SEND_TIMEOUT_S) -> None:
        self._send_timeout_s = send_timeout_s
        self._channel: RTCDataChannel | None = None
        self._pending: collections.deque[str] = collections.deque(maxlen=_MAX_PENDING)
        self._lock = asyncio.Lock()
        # Set whenever the channel's buffer empties or the channel closes (woken waiters look
        # at the channel again).
        self._emptied = asyncio.Event()
        self.broken = asyncio.Event()

    @property
    def channel(self) -> RTCDataChannel | None:
        return self._channel

    def attach(self, channel: RTCDataChannel) -> None:
        """Use `channel` from now on; what was said before goes out once it is open."""
        self._channel = channel
        channel.bufferedAmountLowThreshold = 0  # "bufferedamountlow" once the buffer is empty
        channel.on("bufferedamountlow", self._emptied.set)
        channel.on("close", self._emptied.set)
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def _flush(self) -> None:
        channel = self._channel
        while self._pending and channel is not None and not self.broken.is_set():
            text = self._pending.popleft()
            self._send_now(channel, text)

    async def send_message(self, message: ServerMessage) -> None:
        if self.broken.is_set():
            return
        text = message.to_json()
        async with self._lock:
            channel = self._channel
            if channel is None or channel.readyState == "connecting":
                self._pending.append(text)  # a full deque drops the oldest
                return
            if channel.readyState != "open":
                self._break(f"the control channel is {channel.readyState}")
                return
            self._flush()  # what was said before goes first
            try:
                if channel.bufferedAmount > _HIGH_WATER_BYTES:
                    async with asyncio.timeout(self._send_timeout_s):
                        await self._wait_empty(channel)
            except TimeoutError:
                self._break("the client took no data for too long")
                return
            self._send_now(channel, text)

    def _send_now(self, channel: RTCDataChannel, text: str) -> None:
        if self.broken.is_set():
            return
        try:
            channel.send(text)
        except (InvalidStateError, ConnectionError, OSError) as exc:
            self._break(f"the control channel is {channel.readyState} ({type(exc).__name__})")

    def _break(self, why: str) -> None:
        if not self.broken.is_set():
            _LOG.info("control channel send failed, ending the connection", extra={"why": why})
        self.broken.set()

    async def drain(self, limit_s: float) -> None:
        """Until what was sent has left the channel's buffer (or `limit_s` passed)."""
        channel = self._channel
        if channel is None or self.broken.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await self._wait_empty(channel)

    async def _wait_empty(self, channel: RTCDataChannel) -> None:
        while channel.readyState == "open" and channel.bufferedAmount > 0:
            self._emptied.clear()
            await self._emptied.wait()


class ControlInbox:
    """Client messages from the channel's event handler to the peer's control task, in order."""

    def __init__(self, limit: int = MAX_INBOX) -> None:
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue(limit)
        self.dropped = 0

    def put(self, message: str | bytes) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    async def get(self) -> str | bytes:
        return await self._queue.get()

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped
