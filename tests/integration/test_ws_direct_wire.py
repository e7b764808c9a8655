"""Audio frames the WebSocket sink writes straight to uvicorn's transport are valid RFC 6455
frames for real clients (the `websockets` library parses them strictly, and Chromium), of
every length form, in order with the JSON messages that go through ASGI; behind flow control
they wait their turn. A real uvicorn (websockets-sansio, as the orchestrator runs it) on
loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import websockets
from duplex.asgiserver import InProcessServer
from duplex.audio.frames import PcmFrame
from duplex.orchestrator.protocol import AudioEnd
from duplex.orchestrator.transports.websocket import WebSocketSink
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests.integration.browser import open_chromium

Script = Callable[[WebSocketSink], Awaitable[None]]
_SIZES = (4, 1920, 70_000)  # 7-bit, 16-bit and 64-bit lengths


def _payload(size: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 256 for i in range(size))


class _Harness:
    def __init__(self) -> None:
        self.script: Script | None = None
        self.direct: list[bool] = []
        self.done = asyncio.Event()

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        sink = WebSocketSink(websocket)
        self.direct.append(sink._direct is not None)
        assert self.script is not None
        try:
            await self.script(sink)
            with contextlib.suppress(RuntimeError):  # a script may have closed already
                await websocket.close(1000)
        finally:
            self.done.set()


@pytest.fixture
async def harness() -> AsyncIterator[tuple[_Harness, str]]:
    h = _Harness()
    app = Starlette(routes=[WebSocketRoute("/", h.endpoint)])
    server = InProcessServer(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
    )
    await server.start()
    try:
        yield h, f"ws://127.0.0.1:{server.port}/"
    finally:
        await server.stop(5.0)


async def _receive_all(url: str) -> list[str | bytes]:
    got: list[str | bytes] = []
    async with asyncio.timeout(10.0):
        async with websockets.connect(url, compression=None, max_size=None) as client:
            async for message in client:
                got.append(message)
    return got


async def test_direct_frames_of_every_length_form_arrive_intact_and_in_order_with_json(
    harness: tuple[_Harness, str],
) -> None:
    h, url = harness

    async def script(sink: WebSocketSink) -> None:
        for seed, size in enumerate(_SIZES):
            await sink.send(PcmFrame(_payload(size, seed), 48000))
            await sink.send_message(AudioEnd(seed))
        await sink.send(PcmFrame(_payload(1920, 9), 48000))

    h.script = script
    got = await _receive_all(url)
    assert h.direct == [True]
    expected: list[str | bytes] = []
    for seed, size in enumerate(_SIZES):
        expected += [_payload(size, seed), AudioEnd(seed).to_json()]
    expected.append(_payload(1920, 9))
    assert got == expected


async def test_audio_behind_a_send_that_waits_on_flow_control_keeps_its_place(
    harness: tuple[_Harness, str],
) -> None:
    h, url = harness

    async def script(sink: WebSocketSink) -> None:
        protocol = sink._direct._protocol if sink._direct is not None else None
        assert protocol is not None
        protocol.writable.clear()  # as uvicorn's pause_writing() does
        held = asyncio.create_task(sink.send_message(AudioEnd(1)))
        await asyncio.sleep(0.05)
        assert not held.done()
        # The writer must not jump the queue while a send waits.
        assert sink._direct is not None and not sink._direct.write(b"\x00\x00")
        later = asyncio.create_task(sink.send(PcmFrame(_payload(1920, 2), 48000)))
        await asyncio.sleep(0.05)
        assert not later.done()
        protocol.writable.set()  # resume_writing()
        await asyncio.gather(held, later)
        await sink.send(PcmFrame(_payload(4, 3), 48000))  # direct again

    h.script = script
    got = await _receive_all(url)
    assert isinstance(got[0], str) and "AudioEnd" in got[0]
    assert got[1:] == [_payload(1920, 2), _payload(4, 3)]


async def test_after_the_close_audio_is_not_written(harness: tuple[_Harness, str]) -> None:
    h, url = harness
    written: list[bool] = []

    async def script(sink: WebSocketSink) -> None:
        await sink.send(PcmFrame(_payload(4, 1), 48000))
        await sink._ws.close(1000)
        assert sink._direct is not None
        written.append(sink._direct.write(b"\x00\x00"))
        await sink.send(PcmFrame(_payload(4, 2), 48000))  # through ASGI: refused, not raised

    h.script = script
    got = await _receive_all(url)
    assert written == [False]
    assert got == [_payload(4, 1)]


_CHROMIUM_READ = """
new Promise((resolve, reject) => {
  const ws = new WebSocket(%s);
  ws.binaryType = "arraybuffer";
  const got = [];
  ws.onmessage = (e) => {
    if (typeof e.data === "string") { got.push(["text", e.data]); return; }
    const b = new Uint8Array(e.data);
    let sum = 0;
    for (const x of b) sum = (sum * 31 + x) %% 1000000007;
    got.push(["bytes", b.length, sum]);
  };
  ws.onclose = (e) => resolve({code: e.code, got});
  ws.onerror = () => reject(new Error("websocket error"));
})
"""


def _checksum(data: bytes) -> int:
    total = 0
    for x in data:
        total = (total * 31 + x) % 1_000_000_007
    return total


async def test_chromium_reads_the_direct_frames_of_every_length_form(
    harness: tuple[_Harness, str], tmp_path: Path
) -> None:
    h, url = harness

    async def script(sink: WebSocketSink) -> None:
        for seed, size in enumerate(_SIZES):
            await sink.send(PcmFrame(_payload(size, seed), 48000))
        await sink.send_message(AudioEnd(7))

    h.script = script
    async with open_chromium(tmp_path) as browser:
        result = await browser.evaluate(_CHROMIUM_READ % json.dumps(url), limit_s=15.0)
    assert h.direct == [True]
    expected = [
        ["bytes", size, _checksum(_payload(size, seed))] for seed, size in enumerate(_SIZES)
    ]
    assert result["got"] == [*expected, ["text", AudioEnd(7).to_json()]]
    assert result["code"] == 1000
