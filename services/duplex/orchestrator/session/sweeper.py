"""Frees ended sessions' cyclic garbage in small batches rather than hundreds at a time.

A session's objects form reference cycles (uvicorn's protocol and its transport, the
session's callbacks into itself), so an ended session is freed only by the cycle collector,
and only by a full collection: it lived for seconds, so its objects reached the oldest
generation. With the process's collector thresholds (`__main__`, tuned so that frames
waiting in the pacers do not cause full collections several times a second) a full
collection came once per several hundred ended sessions: 40-50 MB of dead sessions piled up
between two, the RSS was a sawtooth, and its troughs crept up (the live Python heap did
not: the allocators keep pages a pile touched). A full collection after every batch of
ended sessions keeps the pile small.

Its pause grows with the live sessions (on the loaded 2-core dev machine, 50 live sessions,
~40k tracked objects: ~20 ms of CPU, median), so a batch is at least half as many sessions
as are live: the collector's cost per ended session stays flat however many are live (~0.5
ms of CPU per ended session in the soak, ~0.5% of the orchestrator's 108 ms). Each sweep
stands in for an automatic full collection that would otherwise come later, over the same
live sessions plus a larger pile.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

# Ended sessions between two full collections (at least; and at least half the live ones),
# and the least time between two (a burst of endings, e.g. at shutdown or when a worker
# fails, causes one collection, not many).
SWEEP_EVERY_SESSIONS = 25
SWEEP_PER_LIVE_SESSION = 0.5
SWEEP_MIN_INTERVAL_S = 2.0


class CycleSweeper:
    """Runs a full garbage collection after every ``every`` ended sessions (or ``per_live``
    times the live ones, when more), at most once per ``min_interval_s``."""

    def __init__(
        self,
        *,
        every: int = SWEEP_EVERY_SESSIONS,
        per_live: float = SWEEP_PER_LIVE_SESSION,
        min_interval_s: float = SWEEP_MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self._every = every
        self._per_live = per_live
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._collect = collect
        self._ended = 0
        self._last = clock()
        self.sweeps = 0

    def session_ended(self, live: int = 0) -> None:
        """A session ended; ``live`` sessions are still open."""
        self._ended += 1
        if self._ended < max(self._every, live * self._per_live):
            return
        now = self._clock()
        if now - self._last < self._min_interval_s:
            return
        self._ended = 0
        self._last = now
        self.sweeps += 1
        self._collect()
