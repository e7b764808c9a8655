"""The barge-in listener with a fake session and a real webrtc VAD on synthetic audio.

A loud 440 Hz tone is "speech" to webrtc (see duplex/audio/vad.py), which makes exact
onsets and lengths easy to build: a burst shorter than min_speech must not barge in.
"""

from __future__ import annotations

import gc
import weakref
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from duplex.audio.frames import PcmFrame
from duplex.orchestrator.config import BargeInConfig, OrchestratorConfig
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import (
    BargeIn,
    BargeInEnd,
    BargeInOptions,
    BargeInPolicy,
    ServerMessage,
)
from duplex.orchestrator.session.bargein import BargeInSettings, Listener
from duplex.orchestrator.session.output import Cut
from duplex.orchestrator.session.state import SessionState
from duplex.orchestrator.transports.base import TransportKind

RATE = 16000


class FakeSession:
    """Speaks until interrupted; records interruptions and messages."""

    session_id = "sid"

    def __init__(self) -> None:
        self.state = SessionState.SPEAKING
        self.channel = type("C", (), {"kind": TransportKind.WEBSOCKET})()
        self.interrupts: list[bool] = []
        self.sent: list[ServerMessage] = []
        self.resumed = 0

    async def interrupt(self, *, hold: bool, fade_ms: int = 0, announce: Any = None) -> Cut:
        self.interrupts.append(hold)
        cut = Cut(None, 0.0)
        if announce is not None:
            await announce(cut)
        self.state = SessionState.BARGED_IN if hold else SessionState.LISTENING
        return cut

    async def resume_output(self) -> None:
        self.resumed += 1
        self.state = SessionState.SPEAKING

    async def send(self, message: ServerMessage) -> None:
        self.sent.append(message)


def audio(*parts: tuple[str, int]) -> list[PcmFrame]:
    """("tone"|"quiet", ms) parts as 20 ms frames at 16 kHz."""
    chunks = []
    for kind, ms in parts:
        n = RATE * ms // 1000
        t = np.arange(n) / RATE
        wave = 0.5 * 32767 * np.sin(2 * np.pi * 440 * t) if kind == "tone" else np.zeros(n)
        chunks.append(wave.astype(np.int16))
    pcm = np.concatenate(chunks)
    step = RATE // 50
    return [PcmFrame(pcm[i : i + step].tobytes(), RATE) for i in range(0, len(pcm), step)]


def make(options: BargeInOptions | None = None) -> tuple[Listener, FakeSession]:
    config = OrchestratorConfig()
    config = replace(config, barge_in=BargeInConfig(fade_ms=10))
    session = FakeSession()
    settings = BargeInSettings.resolve(config, options)
    listener = Listener(session, settings, config, RATE, OrchestratorMetrics())  # type: ignore[arg-type]
    return listener, session


async def feed(listener: Listener, frames: list[PcmFrame]) -> None:
    for frame in frames:
        await listener.push(frame)


async def test_speech_shorter_than_min_speech_does_not_barge_in() -> None:
    """A 60 ms burst is a click, not speech: the voice goes on. (webrtc holds "speech" about
    80 ms past the sound, so the burst reads as ~140 ms: min_speech is 200 ms here.)"""
    listener, session = make(BargeInOptions(min_speech_ms=200))
    await feed(listener, audio(("quiet", 200), ("tone", 60), ("quiet", 600)))
    await listener.close()
    assert session.interrupts == [] and session.sent == []


async def test_speech_longer_than_min_speech_barges_in_and_stops() -> None:
    """300 ms of speech while speaking: interrupt (not held), BargeIn then BargeInEnd."""
    listener, session = make()
    await feed(listener, audio(("quiet", 200), ("tone", 300), ("quiet", 600)))
    await listener.close()
    assert session.interrupts == [False]
    assert [type(m) for m in session.sent] == [BargeIn, BargeInEnd]
    barge = session.sent[0]
    assert isinstance(barge, BargeIn) and 80 <= barge.latency_ms <= 160


async def test_a_session_option_overrides_min_speech() -> None:
    """SessionStart.barge_in.min_speech_ms 500: 300 ms of speech no longer barges in."""
    listener, session = make(BargeInOptions(min_speech_ms=500))
    await feed(listener, audio(("quiet", 200), ("tone", 300), ("quiet", 600)))
    await listener.close()
    assert session.interrupts == []


async def test_resume_policy_holds_then_resumes_a_false_interruption() -> None:
    """Policy resume: the output is held; speech that ends within false_interruption_ms
    (no ASR: no words to prove it real) resumes it."""
    listener, session = make(BargeInOptions(policy=BargeInPolicy.RESUME))
    await feed(listener, audio(("quiet", 200), ("tone", 300), ("quiet", 600)))
    for task in list(listener._tasks):
        await task
    await listener.close()
    assert session.interrupts == [True] and session.resumed == 1
    assert session.sent[-1] == BargeInEnd(resumed=True)


@pytest.mark.parametrize("state", [SessionState.LISTENING, SessionState.PAUSED])
async def test_no_barge_in_when_nothing_is_playing(state: SessionState) -> None:
    """Speech while the system is silent (listening or paused) interrupts nothing."""
    listener, session = make()
    session.state = state
    await feed(listener, audio(("tone", 400), ("quiet", 600)))
    await listener.close()
    assert session.interrupts == []


async def test_close_frees_the_mic_input_without_waiting_for_the_cycle_collector() -> None:
    """The mic input's resampler holds native memory: it goes when the session closes, not
    at the next full garbage collection (the session's own objects are cyclic)."""
    listener, _session = make()
    mic = weakref.ref(listener._mic)  # type: ignore[arg-type]
    gc.disable()
    try:
        await listener.close()
        assert mic() is None
    finally:
        gc.enable()
    await listener.push(audio(("tone", 20))[0])  # a frame after close is ignored
    assert listener.input_rate == RATE
