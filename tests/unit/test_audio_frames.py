"""Frame sizes and PcmFrame."""

from __future__ import annotations

import numpy as np
import pytest
from duplex.audio import FRAME_MS, PcmFrame, frame_bytes, frame_samples


@pytest.mark.parametrize(
    ("rate", "samples"), [(48000, 960), (24000, 480), (22050, 441), (16000, 320), (8000, 160)]
)
def test_a_20ms_frame_has_rate_over_50_samples(rate: int, samples: int) -> None:
    """20 ms is rate/50 samples, two bytes each."""
    assert FRAME_MS == 20
    assert frame_samples(rate) == samples
    assert frame_bytes(rate) == 2 * samples


def test_other_frame_lengths() -> None:
    """The frame length is a parameter (VADs use 10 and 30 ms, silero 32 ms)."""
    assert frame_samples(16000, 10) == 160
    assert frame_samples(16000, 32) == 512
    assert frame_bytes(48000, 30) == 2880


def test_a_frame_that_is_not_a_whole_number_of_samples_is_rejected() -> None:
    """11025 Hz x 20 ms is 220.5 samples: no such frame."""
    with pytest.raises(ValueError, match="whole number"):
        frame_samples(11025)
    with pytest.raises(ValueError, match="positive"):
        frame_samples(0)


def test_pcm_frame_knows_its_length_and_duration() -> None:
    """960 samples at 48 kHz are 20 ms; array() gives the samples back."""
    pcm = np.arange(960, dtype=np.int16).tobytes()
    frame = PcmFrame(pcm, 48000)
    assert frame.samples == 960
    assert frame.duration_ms == pytest.approx(20.0)
    assert np.array_equal(frame.array(), np.arange(960, dtype=np.int16))


def test_pcm_frame_rejects_half_samples_and_bad_rates() -> None:
    """An odd byte count or a non-positive rate cannot be s16 audio."""
    with pytest.raises(ValueError, match="even number"):
        PcmFrame(b"\x00\x00\x00", 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        PcmFrame(b"", 0)


def test_pcm_frame_is_immutable() -> None:
    """Frames are frozen messages."""
    frame = PcmFrame(b"\x00\x00", 16000)
    with pytest.raises(AttributeError):
        frame.sample_rate = 8000  # type: ignore[misc]
