"""The WebRTC transport with real aiortc peers and a real uvicorn on 127.0.0.1, in front of a
small fake session hub (the session layer is tested on its own): signalling answers and
refusals, the control channel both ways, TTS audio out, mic audio in, and every way a peer
ends leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import uvicorn
from duplex.audio.frames import PcmFrame
from duplex.orchestrator.config import OrchestratorConfig
from duplex.orchestrator.errors import DuplexError
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import (
    ClientMessage,
    Error,
    ErrorCode,
    ProtocolError,
    SessionEnd,
    SessionEnded,
    SessionStart,
    SessionStarted,
)
from duplex.orchestrator.transports.base import ClientChannel, TransportKind
from duplex.orchestrator.transports.webrtc import BINARY_REFUSED, WebRtcTransport
from starlette.applications import Starlette

from tests.integration.rtc_client import RtcClient, http, tone

# ---------------------------------------------------------------- a fake session layer


class FakeConnection:
    """Records what the transport hands the session; answers SessionStart and SessionEnd."""

    def __init__(self, channel: ClientChannel) -> None:
        self.channel = channel
        self.session_id: str | None = None
        self.input_rate: int | None = None
        self.received: list[ClientMessage] = []
        self.audio: list[PcmFrame] = []
        self.rejected: list[ProtocolError] = []
        self.end_reasons: list[str] = []
        self._ended = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def receive(self, message: ClientMessage) -> None:
        self.received.append(message)
        if isinstance(message, SessionStart):
            self.session_id = f"s{id(self)}"
            self.input_rate = 48000
            started = SessionStarted(self.session_id, "fake-model", "fake-worker", 48000)
            await self.channel.messages.send_message(started)
        elif isinstance(message, SessionEnd):
            await self.end("client_end")

    async def receive_audio(self, frame: PcmFrame) -> None:
        self.audio.append(frame)

    async def reject(self, error: ProtocolError) -> None:
        self.rejected.append(error)
        await self.channel.messages.send_message(Error(error.code, error.message))

    async def end(self, reason: str) -> None:
        self.end_reasons.append(reason)
        if self.ended:
            return
        if reason != "disconnected":
            await self.channel.messages.send_message(SessionEnded(reason))
        self._ended.set()

    async def wait_ended(self) -> str:
        await self._ended.wait()
        return self.end_reasons[0]


class FakeHub:
    def __init__(self, max_connections: int = 100) -> None:
        self.connections: list[FakeConnection] = []
        self.max_connections = max_connections

    def open(self, channel: ClientChannel) -> FakeConnection:
        if sum(not c.ended for c in self.connections) >= self.max_connections:
            raise DuplexError(ErrorCode.CAPACITY, "the orchestrator is at max_connections")
        assert channel.kind is TransportKind.WEBRTC and channel.input_sample_rate == 48000
        connection = FakeConnection(channel)
        self.connections.append(connection)
        return connection


# ---------------------------------------------------------------- a real server


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # pytest owns the signals


class Served:
    def __init__(self, transport: WebRtcTransport, hub: FakeHub, url: str) -> None:
        self.transport = transport
        self.hub = hub
        self.url = url


def config(**webrtc: Any) -> OrchestratorConfig:
    base = OrchestratorConfig()
    rtc = replace(base.transport.webrtc, host_addresses=("127.0.0.1",), **webrtc)
    return replace(base, transport=replace(base.transport, webrtc=rtc))


@contextlib.asynccontextmanager
async def serving(cfg: OrchestratorConfig, hub: FakeHub) -> AsyncIterator[Served]:
    transport = WebRtcTransport(hub, cfg, OrchestratorMetrics())
    app = Starlette(routes=transport.routes())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started)
        yield Served(transport, hub, f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        await transport.close_all("shutdown")
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        sock.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving(config(), FakeHub()) as s:
        yield s


async def until(predicate: Any, limit_s: float = 10.0) -> None:
    """Poll another party's state (a server, a transport) until `predicate()` holds."""
    async with asyncio.timeout(limit_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def started_client(served: Served, **kw: Any) -> tuple[RtcClient, FakeConnection]:
    client = RtcClient(served.url, **kw)
    await client.connect()
    await client.send({"type": "SessionStart"})
    await client.wait_for(lambda c: c.of_type("SessionStarted"))
    return client, served.hub.connections[-1]


# ---------------------------------------------------------------- signalling


async def test_an_offer_is_answered_with_loopback_candidates_and_a_peer_id(
    served: Served,
) -> None:
    async with RtcClient(served.url) as client:
        await client.connect()
        answer = client.pc.remoteDescription.sdp
        candidates = [line for line in answer.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(line.split()[4] == "127.0.0.1" for line in candidates)
        assert client.peer_id in served.transport.peer_ids()
        assert client.state == "connected"


async def test_whip_answers_201_with_sdp_and_a_location_and_delete_ends_it(
    served: Served,
) -> None:
    async with RtcClient(served.url) as client:
        await client.connect(whip=True)
        assert client.location == f"/whip/{client.peer_id}"
        await client.send({"type": "SessionStart"})
        await client.wait_for(lambda c: c.of_type("SessionStarted"))
        connection = served.hub.connections[-1]
        reply = await client.delete()
        assert reply.status == 200
        assert connection.end_reasons[0] == "client_end"
        assert served.transport.active_peers == 0
        assert (await client.delete()).status == 404


async def test_whip_with_the_wrong_content_type_is_a_415_that_says_which(
    served: Served,
) -> None:
    async with RtcClient(served.url) as client:
        sdp = await client.offer_sdp()
        reply = await http(
            "POST", served.url + "/whip", sdp.encode(), {"Content-Type": "application/json"}
        )
    assert reply.status == 415
    assert "application/sdp" in reply.text
    assert served.hub.connections == []


async def test_deleting_an_unknown_peer_is_a_404(served: Served) -> None:
    reply = await http("DELETE", served.url + "/whip/nosuchpeer")
    assert reply.status == 404 and "nosuchpeer" in reply.text


@pytest.mark.parametrize("path", ["/offer", "/whip"])
async def test_malformed_sdp_is_a_400_not_a_crash(served: Served, path: str) -> None:
    garbage = "v=0\r\nthis is not sdp"
    if path == "/offer":
        body, ctype = json.dumps({"sdp": garbage, "type": "offer"}).encode(), "application/json"
    else:
        body, ctype = garbage.encode(), "application/sdp"
    reply = await http("POST", served.url + path, body, {"Content-Type": ctype})
    assert reply.status == 400 and reply.text.startswith("malformed SDP")
    assert served.hub.connections == [] and served.transport.active_peers == 0


async def test_an_offer_with_no_audio_is_a_400_no_audio(served: Served) -> None:
    async with RtcClient(served.url) as client:
        client.pc.createDataChannel("control")
        offer = await client.pc.createOffer()
        await client.pc.setLocalDescription(offer)
        body = json.dumps({"sdp": client.pc.localDescription.sdp, "type": "offer"}).encode()
    reply = await http("POST", served.url + "/offer", body, {"Content-Type": "application/json"})
    assert (reply.status, reply.text.strip()) == (400, "offer has no audio")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b'{"sdp": "v=0", "type": "answer"}', 400),
        (b'["v=0"]', 400),
        (b"x" * (65 * 1024), 413),
    ],
)
async def test_bad_offer_bodies_get_a_4xx_with_a_reason(
    served: Served, body: bytes, status: int
) -> None:
    reply = await http("POST", served.url + "/offer", body, {"Content-Type": "application/json"})
    assert reply.status == status and reply.text.strip()


async def test_beyond_capacity_an_offer_gets_503(served: Served) -> None:
    served.hub.max_connections = 0
    async with RtcClient(served.url) as client:
        sdp = await client.offer_sdp()
    reply = await http(
        "POST", served.url + "/whip", sdp.encode(), {"Content-Type": "application/sdp"}
    )
    assert reply.status == 503 and "max_connections" in reply.text


# ---------------------------------------------------------------- the control channel


async def test_control_messages_reach_the_session_and_replies_come_back(served: Served) -> None:
    client, connection = await started_client(served)
    async with client:
        await client.send({"type": "TextChunk", "text": "Hello.", "is_final": True})
        await client.send({"type": "Control", "command": "PAUSE"})
        await until(lambda: len(connection.received) == 3)
        kinds = [type(m).__name__ for m in connection.received]
        assert kinds == ["SessionStart", "TextChunk", "Control"]


async def test_text_that_is_not_json_is_rejected_and_the_session_goes_on(served: Served) -> None:
    client, connection = await started_client(served)
    async with client:
        client.send_raw("this is not json")
        await client.wait_for(lambda c: c.of_type("Error"))
        assert connection.rejected[0].code is ErrorCode.INVALID_MESSAGE
        assert client.of_type("Error")[0]["code"] == "INVALID_MESSAGE"
        await client.send({"type": "TextChunk", "text": "still here"})
        await until(lambda: len(connection.received) == 2)
        assert not connection.ended


async def test_binary_messages_are_rejected_even_a_megabyte_of_random_bytes(
    served: Served,
) -> None:
    client, connection = await started_client(served)
    async with client:
        client.send_raw(b"\x01\x02")
        client.send_raw(np.random.default_rng(1).bytes(1 << 20), ignore_size_limit=True)
        await client.wait_for(lambda c: len(c.of_type("Error")) == 2)
        assert [e.message for e in connection.rejected] == [BINARY_REFUSED] * 2
        await client.send({"type": "TextChunk", "text": "still here"})
        await until(lambda: len(connection.received) == 2)
        assert served.transport.active_peers == 1


async def test_session_end_sends_the_goodbye_then_closes_the_peer(served: Served) -> None:
    client, _connection = await started_client(served)
    async with client:
        await client.send({"type": "SessionEnd"})
        await client.wait_for(lambda c: c.of_type("SessionEnded"))
        assert client.of_type("SessionEnded") == [{"type": "SessionEnded", "reason": "client_end"}]
        await until(lambda: served.transport.active_peers == 0)
        await client.wait_for(lambda c: c.state == "closed")


# ---------------------------------------------------------------- audio


async def test_tts_frames_sent_to_the_audio_sink_arrive_as_audio(served: Served) -> None:
    client, connection = await started_client(served, mic=None)
    async with client:
        pcm = tone(1.0, level=0.4)
        await client.wait_for(lambda c: len(c.got.audio) > 5)
        before = len(client.got.audio)
        assert client.got.peak() < 100  # silence while nothing is said
        for i in range(0, len(pcm), 1920):
            await connection.channel.audio.send(PcmFrame(pcm[i : i + 1920], 48000))
            await asyncio.sleep(0.02)
        await client.wait_for(lambda c: c.got.peak(before) > 5000)


async def test_mic_audio_reaches_the_session_as_20ms_mono_48khz_frames(served: Served) -> None:
    client = RtcClient(served.url, mic=tone(0.5, level=0.3))
    async with client:
        await client.connect()
        await asyncio.sleep(0.3)
        connection = served.hub.connections[-1]
        assert connection.audio == []  # no session yet: nobody listens
        await client.send({"type": "SessionStart"})
        await client.wait_for(lambda c: c.of_type("SessionStarted"))
        client.mic.play(tone(0.6, level=0.3))  # type: ignore[union-attr]
        await until(lambda: len(connection.audio) >= 25)
        assert {(f.sample_rate, len(f.pcm)) for f in connection.audio} == {(48000, 1920)}
        peak = max(int(np.abs(f.array().astype(np.int32)).max()) for f in connection.audio)
        assert peak > 5000


# ---------------------------------------------------------------- endings


async def test_a_client_that_goes_away_ends_its_session_as_disconnected(served: Served) -> None:
    client, connection = await started_client(served)
    await client.close()
    await until(lambda: served.transport.active_peers == 0)
    assert connection.end_reasons[0] == "disconnected"


async def test_a_session_that_ends_itself_says_goodbye_and_closes_the_peer(
    served: Served,
) -> None:
    client, connection = await started_client(served)
    async with client:
        await connection.end("worker_failed")
        await client.wait_for(lambda c: c.of_type("SessionEnded"))
        await until(lambda: served.transport.active_peers == 0)
        assert client.of_type("SessionEnded")[0]["reason"] == "worker_failed"


async def test_a_peer_that_never_connects_is_closed_at_the_connect_timeout() -> None:
    async with (
        serving(config(connect_timeout_s=0.5), FakeHub()) as served,
        RtcClient(served.url) as client,
    ):
        sdp = await client.offer_sdp()
        body = json.dumps({"sdp": sdp, "type": "offer"}).encode()
        reply = await http("POST", served.url + "/offer", body)
        assert reply.status == 200  # ... but the answer is never applied
        await until(lambda: served.transport.active_peers == 0, limit_s=5)
        assert served.hub.connections[0].end_reasons == ["connect_timeout"]


async def test_close_all_ends_every_session_with_its_reason_and_refuses_new_offers(
    served: Served,
) -> None:
    client, connection = await started_client(served)
    async with client:
        await served.transport.close_all("shutdown")
        assert served.transport.active_peers == 0
        assert connection.end_reasons[0] == "shutdown"
        await client.wait_for(lambda c: c.of_type("SessionEnded"))
        async with RtcClient(served.url) as late:
            sdp = await late.offer_sdp()
        reply = await http(
            "POST", served.url + "/whip", sdp.encode(), {"Content-Type": "application/sdp"}
        )
        assert reply.status == 503


async def test_many_connects_and_disconnects_leave_no_peer_and_no_task(served: Served) -> None:
    baseline = len(asyncio.all_tasks())
    for _ in range(10):
        client, _connection = await started_client(served)
        await client.close()
    await until(lambda: served.transport.active_peers == 0)
    await until(lambda: all(c.ended for c in served.hub.connections))
    await until(lambda: len(asyncio.all_tasks()) <= baseline, limit_s=5)
