"""StreamResampler against one-shot soxr."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import soxr
from duplex.audio import StreamResampler


def _sine(rate: int, seconds: float, hz: float = 440.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)


def _chunked(
    resampler: StreamResampler, samples: npt.NDArray[np.int16], sizes: list[int]
) -> npt.NDArray[np.int16]:
    out, i, k = [], 0, 0
    while i < len(samples):
        size = sizes[k % len(sizes)]
        out.append(resampler.push(samples[i : i + size]))
        i += size
        k += 1
    out.append(resampler.flush())
    return np.concatenate(out)


def _max_diff(a: npt.NDArray[np.int16], b: npt.NDArray[np.int16]) -> int:
    assert len(a) == len(b)
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def test_streamed_chunks_match_one_shot_resampling() -> None:
    """22050 -> 48000 in odd-sized chunks equals soxr.resample of the whole signal."""
    signal = _sine(22050, 1.0)
    streamed = _chunked(StreamResampler(22050, 48000), signal, [1, 7, 441, 1000, 333, 2])
    one_shot = soxr.resample(signal, 22050, 48000)
    assert streamed.dtype == np.int16
    assert abs(len(streamed) - 48000) <= 1
    assert abs(len(streamed) - len(one_shot)) <= 1
    n = min(len(streamed), len(one_shot))
    diff = np.abs(streamed[:n].astype(np.int32) - one_shot[:n].astype(np.int32))
    assert diff.max() <= 4  # dither and rounding only: the signal peaks at 12000


def test_resampled_sine_keeps_its_frequency_and_level() -> None:
    """A 440 Hz tone is still 440 Hz at the same level after 24 kHz -> 16 kHz."""
    out = _chunked(StreamResampler(24000, 16000), _sine(24000, 1.0), [480])
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * 16000 / len(out)
    assert peak_hz == pytest.approx(440, abs=2)
    rms = np.sqrt(np.mean(out[1000:-1000].astype(np.float64) ** 2))
    assert rms == pytest.approx(12000 / np.sqrt(2), rel=0.02)


def test_equal_rates_pass_samples_through() -> None:
    """Identity: same samples out, nothing held back."""
    signal = _sine(48000, 0.1)
    resampler = StreamResampler(48000, 48000)
    assert resampler.identity
    assert np.array_equal(resampler.push(signal), signal)
    assert len(resampler.flush()) == 0


def test_flush_resets_for_the_next_utterance() -> None:
    """After flush the resampler starts a fresh stream with the full length again."""
    resampler = StreamResampler(22050, 48000)
    signal = _sine(22050, 0.5)
    first = _chunked(resampler, signal, [441])
    second = _chunked(resampler, signal, [441])
    assert _max_diff(first, second) <= 4  # soxr dithers int16 output (a few LSB)


def test_bytes_are_accepted_as_s16le() -> None:
    """Bytes in give the same result as the int16 array they hold."""
    signal = _sine(16000, 0.2)
    a = _chunked(StreamResampler(16000, 48000), signal, [320])
    b = StreamResampler(16000, 48000)
    b_out = np.concatenate([b.push(signal.tobytes()), b.flush()])
    assert _max_diff(a, b_out) <= 4  # soxr dithers int16 output (a few LSB)


def test_wrong_dtype_or_shape_is_rejected() -> None:
    """Float or stereo arrays are a caller bug, reported as such."""
    resampler = StreamResampler(16000, 48000)
    with pytest.raises(TypeError, match="int16"):
        resampler.push(np.zeros(10, dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mono"):
        resampler.push(np.zeros((10, 2), dtype=np.int16))
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 16000)
