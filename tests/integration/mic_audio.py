"""Mic audio for barge-in tests: real Piper speech (the bundled voice), silence, 20 ms frames."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import soxr
from duplex.audio.frames import frame_samples
from duplex.worker.adapters.base import AdapterOptions, adapter_for
from duplex.worker.adapters.piper import LoadedPiperVoice
from duplex.worker.catalog import builtin_catalog

Int16Array = npt.NDArray[np.int16]
PIPER_RATE = 22050


def piper_speech(texts: Sequence[str], rate: int) -> list[Int16Array]:
    """Each text spoken by en_US-joe-medium, resampled to ``rate``, leading/trailing quiet cut."""
    voice = adapter_for("piper").load(
        builtin_catalog().get("piper-en-joe-medium"), AdapterOptions(onnx_threads=1)
    )
    assert isinstance(voice, LoadedPiperVoice) and voice.sample_rate == PIPER_RATE
    try:
        out = []
        for text in texts:
            audio = np.concatenate(list(voice.synthesize(text)))
            loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 300)
            audio = audio[loud[0] : loud[-1] + 1]
            out.append(soxr.resample(audio, PIPER_RATE, rate).astype(np.int16))
        return out
    finally:
        voice.close()


def silence(rate: int, ms: int) -> Int16Array:
    return np.zeros(rate * ms // 1000, dtype=np.int16)


def frames(parts: Iterable[Int16Array], rate: int) -> list[bytes]:
    """The parts one after another, cut into 20 ms s16le frames (the last one zero-padded)."""
    audio = np.concatenate(list(parts))
    n = frame_samples(rate)
    padded = np.concatenate([audio, np.zeros(-len(audio) % n, dtype=np.int16)])
    return [padded[i : i + n].astype("<i2").tobytes() for i in range(0, len(padded), n)]
