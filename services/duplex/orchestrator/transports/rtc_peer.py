"""The parts of a WebRTC peer, and what the transport needs from the session layer.

`ConnectionLike` and `HubLike` name exactly what the transport calls on the session layer's
`ClientConnection` and `SessionHub`, so the transport depends on that surface only (and a
test can stand a small fake in for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from aiortc import RTCPeerConnection

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.protocol import ClientMessage, ProtocolError
from duplex.orchestrator.transports.base import ClientChannel
from duplex.orchestrator.transports.rtc_channel import ControlChannelSink, ControlInbox
from duplex.orchestrator.transports.rtc_tracks import TtsTrack


class ConnectionLike(Protocol):
    """What this transport uses of the session layer's `ClientConnection`."""

    @property
    def session_id(self) -> str | None: ...

    @property
    def ended(self) -> bool: ...

    @property
    def input_rate(self) -> int | None:
        """The rate mic frames must have; None until the session has started."""
        ...

    async def receive(self, message: ClientMessage) -> None: ...
    async def receive_audio(self, frame: PcmFrame) -> None: ...
    async def reject(self, error: ProtocolError) -> None: ...
    async def end(self, reason: str) -> None: ...
    async def wait_ended(self) -> str: ...


class HubLike(Protocol):
    """What this transport uses of the session layer's `SessionHub`."""

    def open(self, channel: ClientChannel) -> ConnectionLike: ...


class Peer:
    """One client's peer connection, its session connection and the tasks that serve them."""

    def __init__(
        self,
        peer_id: str,
        pc: RTCPeerConnection,
        tts: TtsTrack,
        sink: ControlChannelSink,
        connection: ConnectionLike,
    ) -> None:
        self.id = peer_id
        self.pc = pc
        self.tts = tts
        self.sink = sink
        self.connection = connection
        self.inbox = ControlInbox()
        self.tasks: set[asyncio.Task[None]] = set()
        self.runner: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.stop_reason = "disconnected"
        self.control_attached = False

    def request_stop(self, reason: str) -> None:
        """Ask the runner to close this peer with `reason` (the first reason wins)."""
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_requested.set()

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=f"{name}-{self.id[:8]}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def log_fields(self, **extra: object) -> dict[str, object]:
        fields: dict[str, object] = {"peer_id": self.id, **extra}
        session_id = self.connection.session_id
        if session_id is not None:
            fields["session_id"] = session_id
        return fields
