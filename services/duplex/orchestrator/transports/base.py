"""What a transport gives a session, and what the session layer offers a transport.

A transport (WebSocket, WebRTC) only translates its wire: it parses client input into
protocol messages and PCM frames, hands them to the `ClientConnection` the session layer
made for it, and delivers what the session sends back through two sinks:

- an `AudioSink`: one 20 ms `PcmFrame` at a time, already paced to real time by the
  session; `clear()` drops whatever the transport itself still holds (a WebRTC track's
  queue) so that an interruption is heard at once;
- a `MessageSink`: protocol messages (`SessionStarted`, `AudioEnd`, `BargeIn`, `Error`, ...).

Sinks never raise on a client that went away: they mark themselves broken and the transport
ends the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.protocol import ServerMessage
from duplex.orchestrator.session.pacer_clock import PacerClock


class TransportKind(StrEnum):
    """Bounded label values for metrics and logs."""

    WEBSOCKET = "websocket"
    WEBRTC = "webrtc"
    OPENAI = "openai"  # POST /v1/audio/speech (transports/speech_stream.py)
    WYOMING = "wyoming"  # the Wyoming TTS server


class AudioSink(Protocol):
    """Where a session's output audio goes."""

    async def send(self, frame: PcmFrame) -> None:
        """Deliver one 20 ms frame (the session paces the calls by the clock)."""
        ...

    def clear(self) -> int:
        """Drop audio the transport still buffers (not yet played out to the client); the next
        `send` starts fresh. Returns how many 20 ms frames were dropped (0 when the transport
        buffers nothing), so the session knows exactly which frames the listener heard."""
        ...


class MessageSink(Protocol):
    """Where a session's protocol messages go."""

    async def send_message(self, message: ServerMessage) -> None: ...


@dataclass(frozen=True)
class ClientChannel:
    """One client connection as the session layer sees it."""

    kind: TransportKind
    audio: AudioSink
    messages: MessageSink
    # The rate of the client's mic frames when the transport fixes it (WebRTC: 48000); None:
    # SessionStart.input_sample_rate says (WebSocket).
    input_sample_rate: int | None = None
    # The transport's one timer for the pacing of all its sessions; None: a session paces
    # its own output with a clock of its own.
    pacer_clock: PacerClock | None = None
