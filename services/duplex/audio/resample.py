"""Streaming sample-rate conversion over soxr, keeping filter state across chunks.

Per-chunk stateless resampling leaves clicks at every chunk edge; one
``soxr.ResampleStream`` per stream avoids them and matches one-shot quality.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

Int16Array = npt.NDArray[np.int16]


class StreamResampler:
    """Converts one mono int16 stream from ``in_rate`` to ``out_rate``.

    soxr returns output in bursts (its filter delay), so ``push`` may return fewer or
    more samples than the exact rate ratio; ``flush`` returns the tail and resets the
    stream so the resampler can serve the next utterance. Equal rates pass samples
    through unchanged.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._quality = quality
        self._stream = self._new_stream()

    @property
    def identity(self) -> bool:
        return self.in_rate == self.out_rate

    def push(self, samples: Int16Array | bytes) -> Int16Array:
        """Resample a chunk (any length, including 0); returns what soxr has ready."""
        chunk = _as_int16(samples)
        if self._stream is None:
            return chunk.copy()
        out: Int16Array = self._stream.resample_chunk(chunk)
        return out

    def flush(self) -> Int16Array:
        """The samples still held in the filter; the next push starts a fresh stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        out: Int16Array = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream = self._new_stream()
        return out

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self.identity:
            return None
        return soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="int16", quality=self._quality
        )


def _as_int16(samples: Int16Array | bytes) -> Int16Array:
    if isinstance(samples, bytes | bytearray | memoryview):
        if len(samples) % 2:
            raise ValueError(f"s16 PCM needs an even number of bytes, got {len(samples)}")
        return np.frombuffer(samples, dtype="<i2").astype(np.int16)
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"expected an int16 numpy array or bytes, got {type(samples).__name__}")
    if samples.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {samples.dtype}")
    if samples.ndim != 1:
        raise ValueError(f"expected mono (1-D) samples, got shape {samples.shape}")
    return np.ascontiguousarray(samples)
