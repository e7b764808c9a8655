"""Frees ended sessions' cyclic garbage in small batches rather than hundreds at a time.

A session's objects form reference cycles (uvicorn's protocol and its transport, the
session's callbacks into itself, its gRPC call), so an ended session is freed only by the
cycle collector, and only by a full collection: it lived for seconds, so its objects reached
the oldest generation. With the process's collector thresholds (`__main__`, tuned so that
frames waiting in the pacers do not cause full collections several times a second) a full
collection came once per several hundred ended sessions: ~50 MB of dead sessions piled up
between two, the RSS was a sawtooth, and its troughs crept up as the allocators kept the
pages of each pile. A full collection after every batch of ended sessions keeps the pile
small; the collection is cheap (~1-3 ms with 50 live sessions: what start-up built is frozen
out of its sight) and its rate follows session churn, not the frame rate.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

# Ended sessions between two full collections, and the least time between two (a burst of
# endings, e.g. at shutdown or when a worker fails, causes one collection, not many).
SWEEP_EVERY_SESSIONS = 25
SWEEP_MIN_INTERVAL_S = 2.0


class CycleSweeper:
    """Runs a full garbage collection after every ``every`` ended sessions, at most once
    per ``min_interval_s``."""

    def __init__(
        self,
        *,
        every: int = SWEEP_EVERY_SESSIONS,
        min_interval_s: float = SWEEP_MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self._every = every
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._collect = collect
        self._ended = 0
        self._last = clock()
        self.sweeps = 0

    def session_ended(self) -> None:
        self._ended += 1
        if self._ended < self._every:
            return
        now = self._clock()
        if now - self._last < self._min_interval_s:
            return
        self._ended = 0
        self._last = now
        self.sweeps += 1
        self._collect()
