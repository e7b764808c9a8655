"""The control data channel's sink (queue before open, deadline, never raises) and inbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiortc.exceptions import InvalidStateError
from duplex.orchestrator.protocol import AudioEnd, SessionEnded
from duplex.orchestrator.transports.rtc_channel import ControlChannelSink, ControlInbox


class FakeChannel:
    """The parts of aiortc's RTCDataChannel the sink uses."""

    def __init__(self, state: str = "open") -> None:
        self.readyState = state
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = -1
        self.sent: list[str] = []
        self.handlers: dict[str, list[Callable[[], Any]]] = {}

    def on(self, event: str, handler: Callable[[], Any]) -> None:
        self.handlers.setdefault(event, []).append(handler)

    def emit(self, event: str) -> None:
        for handler in self.handlers.get(event, []):
            handler()

    def send(self, data: str) -> None:
        if self.readyState != "open":
            raise InvalidStateError
        self.sent.append(data)

    def open(self) -> None:
        self.readyState = "open"
        self.emit("open")

    def types(self) -> list[str]:
        return [json.loads(s)["type"] for s in self.sent]


def make_sink(**kw: float) -> ControlChannelSink:
    return ControlChannelSink(**kw)


async def test_messages_said_before_the_channel_exists_go_out_in_order_once_open() -> None:
    sink = make_sink()
    await sink.send_message(AudioEnd(0))
    await sink.send_message(AudioEnd(1))
    channel = FakeChannel("connecting")
    sink.attach(channel)  # type: ignore[arg-type]
    await sink.send_message(AudioEnd(2))
    assert channel.sent == []
    channel.open()
    await sink.send_message(AudioEnd(3))
    assert [json.loads(s)["utterance"] for s in channel.sent] == [0, 1, 2, 3]


async def test_on_an_open_channel_a_message_is_its_json() -> None:
    sink = make_sink()
    channel = FakeChannel()
    sink.attach(channel)  # type: ignore[arg-type]
    await sink.send_message(SessionEnded("client_end"))
    assert channel.sent == [SessionEnded("client_end").to_json()]
    assert channel.bufferedAmountLowThreshold == 0


async def test_a_closed_channel_marks_the_sink_broken_and_nothing_raises() -> None:
    sink = make_sink()
    channel = FakeChannel("closed")
    sink.attach(channel)  # type: ignore[arg-type]
    await sink.send_message(AudioEnd(0))
    assert sink.broken.is_set()
    await sink.send_message(AudioEnd(1))  # still no raise
    assert channel.sent == []


async def test_a_send_that_fails_marks_the_sink_broken() -> None:
    sink = make_sink()
    channel = FakeChannel()
    sink.attach(channel)  # type: ignore[arg-type]

    def fail(data: str) -> None:
        raise InvalidStateError

    channel.send = fail  # type: ignore[method-assign]
    await sink.send_message(AudioEnd(0))
    assert sink.broken.is_set()


async def test_a_full_buffer_waits_until_it_empties() -> None:
    sink = make_sink()
    channel = FakeChannel()
    sink.attach(channel)  # type: ignore[arg-type]
    channel.bufferedAmount = 10 << 20
    send = asyncio.create_task(sink.send_message(AudioEnd(0)))
    await asyncio.sleep(0.05)
    assert channel.sent == [] and not send.done()
    channel.bufferedAmount = 0
    channel.emit("bufferedamountlow")
    await send
    assert channel.types() == ["AudioEnd"]
    assert not sink.broken.is_set()


async def test_a_buffer_that_never_empties_breaks_the_sink_at_the_deadline() -> None:
    sink = make_sink(send_timeout_s=0.1)
    channel = FakeChannel()
    sink.attach(channel)  # type: ignore[arg-type]
    channel.bufferedAmount = 10 << 20
    async with asyncio.timeout(2):
        await sink.send_message(AudioEnd(0))
    assert sink.broken.is_set() and channel.sent == []


async def test_drain_returns_when_the_buffer_empties_or_at_its_limit() -> None:
    sink = make_sink()
    channel = FakeChannel()
    sink.attach(channel)  # type: ignore[arg-type]
    channel.bufferedAmount = 100
    drain = asyncio.create_task(sink.drain(5.0))
    await asyncio.sleep(0.02)
    assert not drain.done()
    channel.bufferedAmount = 0
    channel.emit("bufferedamountlow")
    async with asyncio.timeout(1):
        await drain
    channel.bufferedAmount = 100
    async with asyncio.timeout(2):
        await sink.drain(0.05)  # gives up quietly


async def test_the_inbox_keeps_order_and_counts_what_it_dropped() -> None:
    inbox = ControlInbox(limit=2)
    for message in ("a", b"b", "c", "d"):
        inbox.put(message)
    assert [await inbox.get(), await inbox.get()] == ["a", b"b"]
    assert inbox.take_dropped() == 2
    assert inbox.take_dropped() == 0
