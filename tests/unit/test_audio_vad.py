"""WebRtcVad: validation, silence, a voiced signal."""

from __future__ import annotations

import numpy as np
import pytest
from duplex.audio import VoiceActivityDetector, WebRtcVad, frame_bytes


def _voiced(rate: int, seconds: float) -> bytes:
    """A vowel-like signal: 120 Hz pitch with harmonics shaped by two formants."""
    t = np.arange(int(rate * seconds)) / rate
    signal = np.zeros_like(t)
    for k in range(1, 30):
        hz = 120 * k
        gain = np.exp(-(((hz - 700) / 150) ** 2)) + 0.5 * np.exp(-(((hz - 1200) / 200) ** 2))
        signal += (gain + 0.02) * np.sin(2 * np.pi * hz * t)
    signal *= 0.4 * 32767 / np.abs(signal).max()
    return signal.astype(np.int16).tobytes()


def _frames(pcm: bytes, size: int) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def test_is_a_voice_activity_detector() -> None:
    """WebRtcVad satisfies the VoiceActivityDetector protocol."""
    vad = WebRtcVad(2, 16000)
    assert isinstance(vad, VoiceActivityDetector)
    assert (vad.sample_rate, vad.frame_ms) == (16000, 20)


@pytest.mark.parametrize("rate", [8000, 16000, 32000, 48000])
def test_silence_is_not_speech(rate: int) -> None:
    """Digital silence is never speech, at any supported rate."""
    vad = WebRtcVad(3, rate)
    assert vad.is_speech(bytes(frame_bytes(rate))) is False


def test_voiced_signal_is_speech() -> None:
    """A loud voiced signal is speech in most frames, at every aggressiveness."""
    pcm = _voiced(16000, 1.0)
    for mode in range(4):
        vad = WebRtcVad(mode, 16000)
        decisions = [vad.is_speech(f) for f in _frames(pcm, frame_bytes(16000))]
        assert sum(decisions) >= 0.8 * len(decisions)


def test_wrong_frame_size_is_a_clear_error() -> None:
    """A frame that is not exactly frame_ms long is rejected with the expected size."""
    vad = WebRtcVad(2, 16000)
    with pytest.raises(ValueError, match="640 bytes"):
        vad.is_speech(bytes(100))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aggressiveness": 4, "sample_rate": 16000}, "aggressiveness"),
        ({"aggressiveness": 1, "sample_rate": 22050}, "sample rates"),
        ({"aggressiveness": 1, "sample_rate": 16000, "frame_ms": 25}, "frames of"),
    ],
)
def test_unsupported_settings_are_rejected(kwargs: dict[str, int], message: str) -> None:
    """Only what libwebrtc supports is accepted: modes 0-3, 8/16/32/48 kHz, 10/20/30 ms."""
    with pytest.raises(ValueError, match=message):
        WebRtcVad(**kwargs)
