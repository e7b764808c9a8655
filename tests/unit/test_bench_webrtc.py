"""The WebRTC benchmarks' client logic (bench/webrtc_latency.py) against a small fake session."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.rtc_client import Recorder
from bench.webrtc_latency import QUIET_FRAMES, speak


class FakeSession:
    """Answers each TextChunk with two faint frames then voiced ones; the utterance ends by
    itself after ``frames`` voiced frames, or at a Control STOP."""

    def __init__(self, transport: str, frames: int) -> None:
        self.transport = transport
        self.got = Recorder()
        self.sent: list[dict[str, Any]] = []
        self._frames = frames
        self._ends = 0
        self._task: asyncio.Task[None] | None = None
        if transport == "webrtc":  # a WebRTC track sends silence from the moment it connects
            for _ in range(QUIET_FRAMES):
                self.got.add_frame(0.0, 0)

    async def send(self, message: dict[str, Any]) -> float:
        self.sent.append(message)
        loop = asyncio.get_running_loop()
        if message["type"] == "TextChunk":
            self._task = asyncio.create_task(self._speak())
        elif message.get("command") == "STOP" and self._task is not None:
            self._task.cancel()
            self._audio_end()
        return loop.time()

    def _audio_end(self) -> None:
        self.got.add_message(f'{{"type": "AudioEnd", "utterance": {self._ends}}}')
        self._ends += 1

    async def _speak(self) -> None:
        loop = asyncio.get_running_loop()
        for peak in [20, 20] + [9000] * self._frames:
            await asyncio.sleep(0.005)
            self.got.add_frame(loop.time(), peak)
        self._audio_end()
        for _ in range(QUIET_FRAMES if self.transport == "webrtc" else 0):
            self.got.add_frame(loop.time(), 0)


async def test_a_long_utterance_is_stopped_after_the_hold_and_first_audio_is_measured() -> None:
    """Still speaking after hold_s: Control STOP; first frame comes before the first voiced."""
    session = FakeSession("websocket", frames=1000)
    results = await speak(session, ["one", "two"], hold_s=0.05)  # type: ignore[arg-type]
    kinds = [m.get("command", m["type"]) for m in session.sent]
    assert kinds == ["TextChunk", "STOP", "TextChunk", "STOP"]
    for r in results:
        assert 0 < r.first_frame_s < r.first_voiced_s
        assert r.first_sound_s == pytest.approx(r.first_frame_s)  # faint, not digital silence


async def test_an_utterance_that_ends_within_the_hold_is_not_stopped() -> None:
    """AudioEnd before hold_s: no STOP is sent; over WebRTC the next text waits for quiet."""
    session = FakeSession("webrtc", frames=3)
    results = await speak(session, ["one", "two"], hold_s=1.0)  # type: ignore[arg-type]
    assert [m["type"] for m in session.sent] == ["TextChunk", "TextChunk"]
    assert len(results) == 2 and all(r.first_voiced_s > 0 for r in results)
