"""WebSocketSink: writes through the ASGI send, waits only when the server makes it wait."""

from __future__ import annotations

import asyncio
from typing import Any

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.protocol import AudioEnd
from duplex.orchestrator.transports.websocket import WebSocketSink
from starlette.types import Message


class _Server:
    """An ASGI send that can be made to wait (flow control) or fail (client gone)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def send(self, message: Message) -> None:
        if self.fail is not None:
            raise self.fail
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(message)


def _sink(server: _Server) -> WebSocketSink:
    ws: Any = type("FakeWebSocket", (), {"_send": server.send})()
    return WebSocketSink(ws)


async def test_frames_and_messages_go_out_in_order_through_the_asgi_send() -> None:
    server = _Server()
    sink = _sink(server)
    await sink.send(PcmFrame(b"\x01\x00" * 4, 48000))
    await sink.send_message(AudioEnd(0))
    assert server.sent[0] == {"type": "websocket.send", "bytes": b"\x01\x00" * 4}
    assert server.sent[1]["type"] == "websocket.send" and "AudioEnd" in server.sent[1]["text"]
    assert not sink.broken.is_set()


async def test_a_send_the_server_holds_back_finishes_and_later_sends_wait_their_turn() -> None:
    server = _Server()
    server.gate = asyncio.Event()
    sink = _sink(server)
    first = asyncio.create_task(sink.send(PcmFrame(b"\x01\x00", 48000)))
    await asyncio.sleep(0)
    second = asyncio.create_task(sink.send(PcmFrame(b"\x02\x00", 48000)))
    await asyncio.sleep(0.01)
    assert server.sent == [] and not first.done() and not second.done()
    server.gate.set()
    await asyncio.gather(first, second)
    assert [m["bytes"] for m in server.sent] == [b"\x01\x00", b"\x02\x00"]


async def test_a_failed_send_marks_the_sink_broken_without_raising() -> None:
    server = _Server()
    server.fail = OSError("gone")
    sink = _sink(server)
    await sink.send(PcmFrame(b"\x01\x00", 48000))
    assert sink.broken.is_set()
    server.fail = None
    await sink.send(PcmFrame(b"\x01\x00", 48000))
    assert server.sent == []  # a broken sink sends nothing more
