"""Recent GPU utilization per GPU, kept in memory for the sparklines."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence


class GpuHistory:
    """The last `points` utilization samples of each GPU (keyed "worker/gpu_id"), taken at
    most once per `min_interval_s` (the page and its fragment may both ask). GPUs not seen
    for `forget_after_s` are dropped, so the memory is bounded by the live fleet."""

    def __init__(
        self,
        *,
        points: int = 60,
        min_interval_s: float = 0.5,
        forget_after_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._points = points
        self._min_interval_s = min_interval_s
        self._forget_after_s = forget_after_s
        self._clock = clock
        self._series: dict[str, deque[float]] = {}
        self._seen: dict[str, float] = {}
        self._sampled: dict[str, float] = {}

    def record(self, key: str, utilization: float) -> None:
        now = self._clock()
        self._seen[key] = now
        if now - self._sampled.get(key, float("-inf")) >= self._min_interval_s:
            self._sampled[key] = now
            self._series.setdefault(key, deque(maxlen=self._points)).append(utilization)
        for old in [k for k, t in self._seen.items() if now - t > self._forget_after_s]:
            self._seen.pop(old, None)
            self._sampled.pop(old, None)
            self._series.pop(old, None)

    def series(self, key: str) -> Sequence[float]:
        return tuple(self._series.get(key, ()))
