"""The speed capability of the adapters (SpeedVoice): which voices have it, and the tone's
length follows the rate. Piper's is checked on the real voice in
tests/integration/test_worker_speed.py."""

from __future__ import annotations

import numpy as np
from duplex.worker.adapters.base import SpeedVoice
from duplex.worker.adapters.kokoro import KokoroVoice
from duplex.worker.adapters.piper import LoadedPiperVoice
from duplex.worker.adapters.tone import ToneVoice

TEXT = "One, two, three, and four."


def test_piper_kokoro_and_tone_voices_can_change_their_speaking_rate() -> None:
    assert issubclass(LoadedPiperVoice, SpeedVoice)
    assert issubclass(KokoroVoice, SpeedVoice)
    assert issubclass(ToneVoice, SpeedVoice)


def test_the_tone_at_speed_two_is_half_as_long_and_the_same_pitch() -> None:
    voice = ToneVoice("tone-fast", 24000, 0.0)
    fast = voice.at_speed(2.0)
    normal = np.concatenate(list(voice.synthesize(TEXT)))
    quick = np.concatenate(list(fast.synthesize(TEXT)))
    assert quick.size == normal.size // 2
    assert np.array_equal(quick[:100], normal[:100])  # the same sine from the same start
    assert (fast.model_id, fast.sample_rate) == (voice.model_id, voice.sample_rate)


def test_closing_a_speed_view_leaves_the_shared_voice_usable() -> None:
    voice = ToneVoice("tone-fast", 24000, 0.0)
    voice.at_speed(0.5).close()
    assert list(voice.synthesize(TEXT))
