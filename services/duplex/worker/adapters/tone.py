"""A deterministic synthetic voice with a chosen real-time factor, for load tests."""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from duplex.worker.adapters.base import AdapterOptions, Int16Array, Voice
from duplex.worker.catalog import ModelSpec

MS_PER_CHAR = 60
MAX_DURATION_MS = 20_000
CHUNK_MS = 200
MIN_HZ = 220.0
MAX_HZ = 440.0
AMPLITUDE = 0.3 * 32767
FADE_MS = 5
RENDER_CACHE = 64  # texts whose signal is kept


def tone_pitch(text: str) -> float:
    """The tone's frequency for ``text``: stable across runs and processes (crc32, not hash)."""
    span = MAX_HZ - MIN_HZ
    return MIN_HZ + span * (zlib.crc32(text.encode("utf-8")) % 1000) / 999


def tone_duration_ms(text: str) -> int:
    """60 ms per character, capped; blank text gives no audio."""
    if not text.strip():
        return 0
    return min(len(text) * MS_PER_CHAR, MAX_DURATION_MS)


class ToneVoice:
    """Sine tone whose pitch depends on the text; takes ``rtf`` x its duration to produce.

    Safe from several threads at once: it keeps no per-call state on the object (only a
    cache of rendered texts).
    """

    def __init__(
        self,
        model_id: str,
        sample_rate: int,
        rtf: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        speed: float = 1.0,
    ) -> None:
        if rtf < 0:
            raise ValueError(f"rtf must be >= 0, got {rtf}")
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.model_id = model_id
        self.sample_rate = sample_rate
        self.rtf = rtf
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        self._closed = threading.Event()
        self._rendered: dict[str, Int16Array] = {}

    def at_speed(self, speed: float) -> Voice:
        """The same tone, ``speed`` times shorter (no model: a voice of its own)."""
        return ToneVoice(
            self.model_id, self.sample_rate, self.rtf, clock=self._clock, sleep=self._sleep,
            speed=self.speed * speed,
        )  # fmt: skip

    def render(self, text: str) -> Int16Array:
        """The whole signal for ``text`` at once (what synthesize yields, concatenated).

        Kept for the last few texts, read-only: load tests speak the same clauses over and
        over, and what they measure is the cost of streaming audio, not of computing a sine.
        """
        cached = self._rendered.get(text)
        if cached is not None:
            return cached
        signal = self._render(text)
        signal.flags.writeable = False
        if len(self._rendered) >= RENDER_CACHE:
            # Threads may race here: the worst case renders a text twice.
            with contextlib.suppress(KeyError, StopIteration, RuntimeError):
                del self._rendered[next(iter(self._rendered))]
        self._rendered[text] = signal
        return signal

    def _render(self, text: str) -> Int16Array:
        total = round(self.sample_rate * tone_duration_ms(text) / self.speed / 1000)
        t = np.arange(total, dtype=np.float64) / self.sample_rate
        wave = np.sin(2 * np.pi * tone_pitch(text) * t)
        fade = min(total // 2, self.sample_rate * FADE_MS // 1000)
        if fade:
            # Short ramps keep the start and end free of clicks.
            ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
            wave[:fade] *= ramp
            wave[total - fade :] *= ramp[::-1]
        return np.round(wave * AMPLITUDE).astype(np.int16)

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        """Yield ~200 ms chunks, each no sooner than ``rtf`` x the audio produced so far."""
        if self._closed.is_set():
            raise RuntimeError(f"voice {self.model_id} is closed")
        signal = self.render(text)
        step = self.sample_rate * CHUNK_MS // 1000
        start = self._clock()
        for offset in range(0, signal.size, step):
            chunk = signal[offset : offset + step]
            if self.rtf > 0:
                # Pace against the start, not per chunk, so sleep overshoot does not add up.
                due = start + self.rtf * (offset + chunk.size) / self.sample_rate
                delay = due - self._clock()
                if delay > 0:
                    self._sleep(delay)
            if self._closed.is_set():
                return
            yield chunk

    def close(self) -> None:
        """Nothing to free; later calls fail like a closed neural voice's."""
        self._closed.set()


class ToneAdapter:
    """Builds :class:`ToneVoice` from ``params["rtf"]``."""

    name = "tone"

    def load(self, spec: ModelSpec, options: AdapterOptions) -> ToneVoice:
        """Instant: there is no model file."""
        del options  # no engine to configure
        return ToneVoice(spec.model_id, spec.native_sample_rate, float(spec.params.get("rtf", "0")))
