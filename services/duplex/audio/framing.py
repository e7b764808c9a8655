"""Re-cutting a stream of PCM of any chunk size into exact frames."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from duplex.audio.frames import FRAME_MS, frame_bytes


class FrameCutter:
    """Buffers mono s16le PCM and hands out exact ``frame_ms`` frames as bytes.

    Synthesizers and resamplers deliver audio in arbitrary bursts; the wire carries
    fixed frames. ``flush`` zero-pads the last partial frame so an utterance ends on
    a whole frame.
    """

    def __init__(self, sample_rate: int, frame_ms: int = FRAME_MS) -> None:
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = frame_bytes(sample_rate, frame_ms)
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes held back, less than one frame."""
        return len(self._buf)

    def push(self, samples: npt.NDArray[np.int16] | bytes) -> list[bytes]:
        """Add audio; return every whole frame now available, in order."""
        self._buf += _pcm_bytes(samples)
        size = self.frame_bytes
        whole = len(self._buf) - len(self._buf) % size
        frames = [bytes(self._buf[i : i + size]) for i in range(0, whole, size)]
        del self._buf[:whole]
        return frames

    def flush(self) -> bytes | None:
        """The held-back audio as one zero-padded frame, or None if nothing is held."""
        if not self._buf:
            return None
        frame = bytes(self._buf) + bytes(self.frame_bytes - len(self._buf))
        self._buf.clear()
        return frame

    def clear(self) -> None:
        """Drop held-back audio (interruption)."""
        self._buf.clear()


def _pcm_bytes(samples: npt.NDArray[np.int16] | bytes) -> bytes:
    if isinstance(samples, bytes | bytearray | memoryview):
        return bytes(samples)
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"expected an int16 numpy array or bytes, got {type(samples).__name__}")
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise TypeError(f"expected 1-D int16 samples, got {samples.dtype} of shape {samples.shape}")
    return samples.astype("<i2", copy=False).tobytes()
