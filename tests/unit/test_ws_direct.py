"""The binary frames the WebSocket sink writes itself are the frames `websockets` would write,
and the sink takes that path only where it is safe (see transports/ws_direct.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from duplex.audio.frames import PcmFrame
from duplex.orchestrator.protocol import AudioEnd
from duplex.orchestrator.transports.websocket import WebSocketSink
from duplex.orchestrator.transports.ws_direct import DirectBinaryWriter, binary_frame_header
from websockets.frames import Frame, Opcode


@pytest.mark.parametrize(
    ("length", "header_size"),
    [(0, 2), (1, 2), (125, 2), (126, 4), (1920, 4), (65535, 4), (65536, 10), (200_000, 10)],
)
def test_the_header_and_payload_are_what_websockets_serializes_for_each_length_form(
    length: int, header_size: int
) -> None:
    payload = bytes(i % 251 for i in range(length))
    header = binary_frame_header(length)
    expected = Frame(Opcode.BINARY, payload, fin=True).serialize(mask=False, extensions=[])
    assert len(header) == header_size
    assert header + payload == expected


def test_the_length_forms_switch_at_126_and_65536() -> None:
    assert binary_frame_header(125) == b"\x82\x7d"
    assert binary_frame_header(126) == b"\x82\x7e\x00\x7e"
    assert binary_frame_header(65535) == b"\x82\x7e\xff\xff"
    assert binary_frame_header(65536) == b"\x82\x7f" + (65536).to_bytes(8, "big")
    with pytest.raises(ValueError):
        binary_frame_header(-1)


class _Server:
    """An ASGI send of a server that is not uvicorn's websockets-sansio protocol."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.transport = asyncio.Transport()

    async def send(self, message: Any) -> None:
        self.sent.append(message)


async def test_another_server_gets_no_direct_writer_and_audio_goes_through_asgi() -> None:
    server = _Server()
    assert DirectBinaryWriter.of(server.send) is None
    ws: Any = type("FakeWebSocket", (), {"_send": server.send})()
    sink = WebSocketSink(ws)
    await sink.send(PcmFrame(b"\x01\x00" * 4, 48000))
    await sink.send_message(AudioEnd(0))
    assert server.sent[0] == {"type": "websocket.send", "bytes": b"\x01\x00" * 4}
    assert "AudioEnd" in server.sent[1]["text"]
