"""The connection around a session: a failing audio sink ends the session with a reason
(never silently), and mic audio before SessionStart is refused."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.config import OrchestratorConfig
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import Error, ServerMessage, SessionEnded, SessionStart, TextChunk
from duplex.orchestrator.session import ClientConnection, SessionServices
from duplex.orchestrator.transports.base import ClientChannel, TransportKind

from tests.unit.test_session import FakeClients, FakeRouter, FakeWorker


class BrokenAudio:
    """A transport whose audio output fails on the first frame (a bug, not a client gone)."""

    async def send(self, frame: PcmFrame) -> None:
        raise RuntimeError("encoder crashed")

    def clear(self) -> int:
        return 0


class Messages:
    def __init__(self) -> None:
        self.got: list[ServerMessage] = []

    async def send_message(self, message: ServerMessage) -> None:
        self.got.append(message)


def connection(audio: object, messages: Messages) -> ClientConnection:
    workers = [FakeWorker("a")]
    config = replace(OrchestratorConfig())
    services = SessionServices(
        config, FakeRouter(workers), FakeClients(workers), OrchestratorMetrics()
    )  # type: ignore[arg-type]
    channel = ClientChannel(TransportKind.WEBSOCKET, audio, messages)  # type: ignore[arg-type]
    return ClientConnection(channel, services, on_started=lambda c: None, on_ended=lambda c: None)


async def test_a_failing_audio_sink_ends_the_session_with_a_reason() -> None:
    """The pacer dies with the sink: Error INTERNAL, SessionEnded output_failed."""
    messages = Messages()
    conn = connection(BrokenAudio(), messages)
    await conn.receive(SessionStart(model_id="tone-fast"))
    await conn.receive(TextChunk("Hello there.", is_final=True))
    async with asyncio.timeout(5):
        reason = await conn.wait_ended()
    assert reason == "output_failed"
    errors = [m for m in messages.got if isinstance(m, Error)]
    assert errors and errors[-1].code.value == "INTERNAL"
    assert messages.got[-1] == SessionEnded("output_failed")


async def test_mic_audio_before_session_start_is_refused() -> None:
    """NOT_STARTED, once a second at most; the connection stays open."""
    messages = Messages()
    conn = connection(BrokenAudio(), messages)
    for _ in range(5):
        await conn.receive_audio(PcmFrame(b"\0\0" * 320, 16000))
    assert [m.code.value for m in messages.got if isinstance(m, Error)] == ["NOT_STARTED"]
    assert not conn.ended
    await conn.end("client_end")
