"""Zero-shot voices: a session's reference audio becomes a voice of its own.

A model that can clone a voice (capability ``zero_shot``) loads as a :class:`ZeroShotVoice`:
besides its default voice it makes a per-session :class:`~duplex.worker.adapters.base.Voice`
from a :class:`ReferenceAudio` (``session_voice``). The reference arrives as raw s16le mono
PCM with its rate (the orchestrator has already decoded the client's WAV), so nothing here
needs FFmpeg, torchcodec or torchaudio's I/O: numpy and soxr turn it into float samples at
the rate the engine wants.

Computing the conditioning (speaker latents) costs a few hundred milliseconds on a GPU and
seconds on a CPU, and clients tend to reuse one reference for many sessions, so each voice
keeps a small :class:`ConditioningCache` keyed by the audio's content hash. Each lookup is
logged (``zero-shot conditioning``, with ``result`` hit or miss) and, once the worker connects
the cache to its metrics (:func:`watch_conditioning`), counted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
import soxr

from duplex.worker.adapters.base import Voice

Float32Array = npt.NDArray[np.float32]

_LOG = logging.getLogger(__name__)

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


class CacheResult(StrEnum):
    """What a conditioning lookup found (the ``result`` label and log field)."""

    HIT = "hit"
    MISS = "miss"


class ConditioningObserver(Protocol):
    """Told of every lookup: a hit when it is decided, a miss once its computation ended
    (``compute_s`` its duration, None when it raised)."""

    def __call__(self, result: CacheResult, compute_s: float | None) -> None: ...


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
        self._model_id = ""
        self._observer: ConditioningObserver | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def watched(self) -> bool:
        """True once :meth:`watch` connected an observer."""
        return self._observer is not None

    def watch(self, model_id: str, observer: ConditioningObserver | None) -> None:
        """Report every lookup to ``observer`` (the worker's metrics) and log it under
        ``model_id``; None stops reporting."""
        with self._lock:
            self._model_id = model_id
            self._observer = observer

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> T:
        """The cached value for ``key``, computing and storing it on a miss."""
        with self._lock:
            hit = key in self._items
            if hit:
                self._items.move_to_end(key)
                self.hits += 1
                value = self._items[key]
            else:
                self.misses += 1
            counts = {"hits": self.hits, "misses": self.misses}
            model_id, observer = self._model_id, self._observer
        if hit:
            self._report(CacheResult.HIT, key, model_id, observer, counts, None)
            return value
        started = time.perf_counter()
        compute_s: float | None = None
        try:
            value = compute()
            compute_s = time.perf_counter() - started
        finally:
            self._report(CacheResult.MISS, key, model_id, observer, counts, compute_s)
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return value

    @staticmethod
    def _report(
        result: CacheResult,
        key: str,
        model_id: str,
        observer: ConditioningObserver | None,
        counts: dict[str, int],
        compute_s: float | None,
    ) -> None:
        # Outside the lock: the observer (prometheus_client) and logging take their own.
        fields: dict[str, object] = {
            "result": str(result),
            "reference_sha256": key[:16],  # enough to tell recordings apart, not the audio
            **counts,
        }
        if model_id:
            fields["model_id"] = model_id
        if result is CacheResult.MISS:
            fields["compute_ms"] = None if compute_s is None else round(compute_s * 1000, 1)
        _LOG.info("zero-shot conditioning", extra=fields)
        if observer is not None:
            observer(result, compute_s)

    def clear(self) -> None:
        """Drop every entry (on unload, so GPU tensors are freed with the model)."""
        with self._lock:
            self._items.clear()


def watch_conditioning(voice: object, model_id: str, observer: ConditioningObserver) -> bool:
    """Connect a loaded voice's conditioning cache (a zero-shot voice's ``cache``) to
    ``observer``, e.g. ``functools.partial(metrics.zero_shot_conditioning, model_id)``.
    False, and nothing done, for a voice without one."""
    cache = getattr(voice, "cache", None)
    if not isinstance(cache, ConditioningCache):
        return False
    cache.watch(model_id, observer)
    return True
