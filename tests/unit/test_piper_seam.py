"""A Piper clause cut between words loses its trailing silence (no pause in mid-phrase)."""

from __future__ import annotations

import numpy as np
from duplex.worker.adapters.piper import (
    SEAM_TAIL_S,
    ends_between_words,
    trim_seam_tail,
)

RATE = 22050


def test_a_text_cut_between_words_is_told_from_one_ending_in_punctuation() -> None:
    assert ends_between_words("The quick brown ")
    assert ends_between_words("at 9")
    assert not ends_between_words("Hello there, ")
    assert not ends_between_words("Where did you park the car?")
    assert not ends_between_words("   ")


def test_trailing_silence_is_cut_to_a_short_faded_tail() -> None:
    sound = (np.sin(np.arange(RATE // 2) / 5) * 8000).astype(np.int16)  # 0.5 s of sound
    audio = np.concatenate([sound, np.full(RATE // 4, 40, np.int16)])  # 0.25 s of hiss
    out = trim_seam_tail(audio, RATE)
    assert out.size == sound.size + int(SEAM_TAIL_S * RATE)
    assert np.array_equal(out[: sound.size - 1], sound[: sound.size - 1])
    assert out[-1] == 0  # faded to zero: no click where it stops


def test_audio_without_a_long_silent_tail_or_without_sound_is_unchanged() -> None:
    sound = (np.sin(np.arange(RATE // 2) / 5) * 8000).astype(np.int16)
    assert trim_seam_tail(sound, RATE) is sound
    quiet = np.zeros(RATE, np.int16)
    assert trim_seam_tail(quiet, RATE) is quiet
