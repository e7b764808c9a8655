"""20 ms PCM frames: the unit of audio everywhere (mono, signed 16-bit little-endian)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FRAME_MS = 20
SAMPLE_WIDTH = 2  # bytes per s16 sample


def frame_samples(sample_rate: int, ms: int = FRAME_MS) -> int:
    """Samples in one frame of ``ms`` milliseconds (960 at 48 kHz and 20 ms)."""
    if sample_rate <= 0 or ms <= 0:
        raise ValueError(
            f"sample rate and frame length must be positive, got {sample_rate} Hz, {ms} ms"
        )
    if (sample_rate * ms) % 1000:
        raise ValueError(f"{ms} ms at {sample_rate} Hz is not a whole number of samples")
    return sample_rate * ms // 1000


def frame_bytes(sample_rate: int, ms: int = FRAME_MS) -> int:
    """Bytes in one frame of s16 mono PCM (1920 at 48 kHz and 20 ms)."""
    return frame_samples(sample_rate, ms) * SAMPLE_WIDTH


@dataclass(frozen=True)
class TextSpan:
    """The text a frame voices: characters ``[start, end)`` of utterance ``utterance``.

    Positions are those of whoever numbers the utterance (the worker's stream, or the
    client's text once the orchestrator has mapped them). ``start``/``end`` are the bounds of
    the clause the frame belongs to; ``clause_end`` marks the clause's last frame.
    """

    utterance: int
    start: int
    end: int
    clause_end: bool = False


@dataclass(frozen=True)
class PcmFrame:
    """Mono s16le PCM that carries its own sample rate (any length, not only 20 ms), and
    optionally the text it voices."""

    pcm: bytes
    sample_rate: int
    span: TextSpan | None = None

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if len(self.pcm) % SAMPLE_WIDTH:
            raise ValueError(f"s16 PCM needs an even number of bytes, got {len(self.pcm)}")

    @property
    def samples(self) -> int:
        """Number of samples."""
        return len(self.pcm) // SAMPLE_WIDTH

    @property
    def duration_ms(self) -> float:
        return self.samples * 1000 / self.sample_rate

    def array(self) -> npt.NDArray[np.int16]:
        """The samples as a read-only int16 array (no copy)."""
        return np.frombuffer(self.pcm, dtype="<i2")
