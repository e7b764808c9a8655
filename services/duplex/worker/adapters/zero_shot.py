"""Zero-shot voices: a session's reference audio becomes a voice of its own.

A model that can clone a voice (capability ``zero_shot``) loads as a :class:`ZeroShotVoice`:
besides its default voice it makes a per-session :class:`~duplex.worker.adapters.base.Voice`
from a :class:`ReferenceAudio` (``session_voice``). The reference arrives as raw s16le mono
PCM with its rate (the orchestrator has already decoded the client's WAV), so nothing here
needs FFmpeg, torchcodec or torchaudio's I/O: numpy and soxr turn it into float samples at
the rate the engine wants.

Computing the conditioning (speaker latents) costs a few hundred milliseconds on a GPU and
seconds on a CPU, and clients tend to reuse one reference for many sessions, so each voice
keeps a small :class:`ConditioningCache` keyed by the audio's content hash.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
import soxr

from duplex.worker.adapters.base import Voice

Float32Array = npt.NDArray[np.float32]

MAX_REFERENCE_S = 30.0
"""Longest reference audio a worker accepts (XTTS conditions on at most 30 s)."""

MIN_REFERENCE_S = 0.5
"""Shortest reference audio worth conditioning on."""


class ReferenceAudioError(ValueError):
    """The reference audio cannot condition a voice (empty, too short or too long, odd size)."""


@dataclass(frozen=True)
class ReferenceAudio:
    """A session's reference recording: s16le mono PCM at ``sample_rate``."""

    pcm: bytes
    sample_rate: int

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ReferenceAudioError(f"reference sample_rate must be > 0, got {self.sample_rate}")
        if len(self.pcm) % 2:
            raise ReferenceAudioError("reference PCM must be s16le: an even number of bytes")

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.pcm) / 2 / self.sample_rate

    def digest(self) -> str:
        """Content hash (rate and samples): the conditioning cache key."""
        h = hashlib.sha256(self.sample_rate.to_bytes(4, "little"))
        h.update(self.pcm)
        return h.hexdigest()

    def check(self, *, min_s: float = MIN_REFERENCE_S, max_s: float = MAX_REFERENCE_S) -> None:
        """Raise ReferenceAudioError unless the duration is within [min_s, max_s]."""
        duration = self.duration_s
        if duration < min_s:
            raise ReferenceAudioError(
                f"reference audio is {duration:.2f} s; at least {min_s:.2f} s is needed"
            )
        if duration > max_s:
            raise ReferenceAudioError(
                f"reference audio is {duration:.1f} s; at most {max_s:.1f} s is accepted"
            )

    def samples_at(self, rate: int) -> Float32Array:
        """Float samples in [-1, 1] at ``rate`` (soxr, one shot: the whole clip is here)."""
        audio = np.frombuffer(self.pcm, dtype="<i2").astype(np.float32) / 32768.0
        if rate == self.sample_rate:
            return audio
        out: Float32Array = soxr.resample(audio, self.sample_rate, rate, quality="HQ")
        return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)


@runtime_checkable
class ZeroShotVoice(Protocol):
    """A loaded model that can also speak in a voice conditioned on reference audio."""

    model_id: str
    sample_rate: int

    def session_voice(
        self, *, reference: ReferenceAudio | None = None, language: str | None = None
    ) -> Voice:
        """A voice for one session, conditioned on ``reference`` when given (zero-shot) and
        speaking ``language`` when given; blocking (may run the speaker encoder). Raises
        ReferenceAudioError for unusable audio."""
        ...


T = TypeVar("T")


class ConditioningCache(Generic[T]):
    """A small thread-safe LRU of conditioning by content hash, counting hits and misses.

    Two sessions asking for the same new reference at once may both compute it (the
    computation runs outside the lock); the second result simply replaces the first.
    """

    def __init__(self, capacity: int = 32) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> T:
        """The cached value for ``key``, computing and storing it on a miss."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = compute()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        """Drop every entry (on unload, so GPU tensors are freed with the model)."""
        with self._lock:
            self._items.clear()
