"""WebSocketSink: writes through the ASGI send, waits only when the server makes it wait."""

from __future__ import annotations

import asyncio
from typing import Any

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.protocol import AudioEnd
from duplex.orchestrator.transports.backlog import (
    BacklogCheck,
    BacklogLimit,
    TransportBacklog,
    Verdict,
    backlog_of,
)
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


# -- a client that stops reading ------------------------------------------------------------

_RATE = 48000
_MS = _RATE * 2 // 1000  # bytes of audio per millisecond


class _Transport(asyncio.WriteTransport):
    """uvicorn's transport as the backlog check sees it: a write buffer of a set size."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class _Protocol(_Server):
    """An ASGI send bound to a protocol that holds its transport, as uvicorn's is."""

    def __init__(self) -> None:
        super().__init__()
        self.transport = _Transport()


def _limited_sink(protocol: _Protocol, max_backlog_ms: int = 100) -> WebSocketSink:
    ws: Any = type("FakeWebSocket", (), {"_send": protocol.send})()
    return WebSocketSink(ws, BacklogLimit(max_backlog_ms, grace_s=0.1, sample_interval_s=0.02))


def _check(queued: list[int]) -> BacklogCheck:
    return BacklogCheck(lambda: queued[0], BacklogLimit(1000, grace_s=2.0, sample_interval_s=0.25))


def test_a_backlog_above_the_limit_is_not_reading_only_after_the_grace_period() -> None:
    queued = [0]
    check = _check(queued)
    assert check.sample(0.0, _RATE) is Verdict.READING
    queued[0] = 1001 * _MS
    assert check.sample(1.0, _RATE) is Verdict.BEHIND
    assert check.sample(2.9, _RATE) is Verdict.BEHIND
    assert check.sample(3.0, _RATE) is Verdict.NOT_READING
    assert round(check.backlog_ms()) == 1001


def test_a_client_that_catches_up_starts_its_grace_period_afresh() -> None:
    queued = [1500 * _MS]
    check = _check(queued)
    assert check.sample(0.0, _RATE) is Verdict.BEHIND
    queued[0] = 999 * _MS
    assert check.sample(1.9, _RATE) is Verdict.READING
    queued[0] = 1500 * _MS
    assert check.sample(2.1, _RATE) is Verdict.BEHIND  # not 2.1 s over: the clock restarted
    assert check.sample(4.2, _RATE) is Verdict.NOT_READING


def test_the_limit_follows_the_rate_of_the_audio_and_samples_are_spaced() -> None:
    queued = [1500 * 16000 * 2 // 1000]  # 1.5 s at 16 kHz is 0.5 s at 48 kHz
    check = _check(queued)
    assert check.sample(0.0, _RATE) is Verdict.READING
    assert check.sample(0.25, 16000) is Verdict.BEHIND
    assert not check.due(0.49) and check.due(0.5)


def test_a_send_without_a_reachable_transport_has_no_backlog_check() -> None:
    assert backlog_of(_Server().send) is None
    assert _limited_sink(_Protocol(), max_backlog_ms=0).watch is None
    ws: Any = type("FakeWebSocket", (), {"_send": _Server().send})()
    assert WebSocketSink(ws, BacklogLimit(100)).watch is None


def test_a_send_wrapped_in_closures_as_starlette_does_still_reaches_the_transport() -> None:
    protocol = _Protocol()

    def wrap(send: Any) -> Any:
        async def sender(message: Message) -> None:
            await send(message)

        return sender

    backlog = backlog_of(wrap(wrap(protocol.send)))
    assert backlog is not None and backlog.transport is protocol.transport


async def test_the_kernel_queue_of_a_socket_whose_peer_does_not_read_counts() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        backlog = TransportBacklog(writer.transport)  # type: ignore[arg-type]
        writer.write(b"\0" * 4_000_000)
        await asyncio.sleep(0.05)
        queued = backlog.bytes_queued()
        print(f"\nqueued toward a peer that does not read: {queued} bytes "
              f"({writer.transport.get_write_buffer_size()} in user space)")  # fmt: skip
        # What the peer's kernel took (its receive buffer) is no longer ours; the rest is.
        assert writer.transport.get_write_buffer_size() < queued <= 4_000_000
    finally:
        writer.transport.abort()
        for peer in accepted:
            peer.transport.abort()
        server.close()
        await server.wait_closed()


async def test_a_client_that_stops_reading_is_flagged_and_its_audio_then_dropped() -> None:
    protocol = _Protocol()
    sink = _limited_sink(protocol)
    frame = PcmFrame(b"\0" * 20 * _MS, _RATE)
    await sink.send(frame)
    protocol.transport.buffered = 500 * _MS  # the client stopped reading
    for _ in range(30):
        await sink.send(frame)
        if sink.not_reading.is_set():
            break
        await asyncio.sleep(0.01)
    assert sink.not_reading.is_set()
    sent = len(protocol.sent)
    await sink.send(frame)
    await sink.send_message(AudioEnd(0))  # the goodbye still goes out, behind the audio
    assert len(protocol.sent) == sent + 1 and "text" in protocol.sent[-1]
    await sink.aclose()


async def test_the_watchdog_notices_a_stall_after_the_audio_stopped() -> None:
    protocol = _Protocol()
    sink = _limited_sink(protocol)
    protocol.transport.buffered = 500 * _MS
    await sink.send(PcmFrame(b"\0" * 20 * _MS, _RATE))  # the last frame of the answer
    async with asyncio.timeout(2):
        await sink.not_reading.wait()
    await sink.aclose()


async def test_a_client_that_catches_up_is_not_flagged() -> None:
    protocol = _Protocol()
    sink = _limited_sink(protocol)
    protocol.transport.buffered = 500 * _MS
    await sink.send(PcmFrame(b"\0" * 20 * _MS, _RATE))
    await asyncio.sleep(0.05)
    protocol.transport.buffered = 0
    await asyncio.sleep(0.2)
    assert not sink.not_reading.is_set()
    await sink.aclose()


async def test_a_close_the_client_does_not_take_aborts_the_socket() -> None:
    protocol = _Protocol()
    sink = _limited_sink(protocol)
    assert sink.watch is not None
    await sink.watch.close_or_abort(flush_s=0.5)
    assert not protocol.transport.aborted  # nothing queued: a graceful close
    protocol.transport.buffered = 1
    await sink.watch.close_or_abort(flush_s=0.5)
    assert protocol.transport.aborted
