"""How many cores other processes leave free: decides whether a lone job may run wide."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

PROC_STAT = Path("/proc/stat")
MIN_WINDOW_S = 0.5
"""A reading older than this is refreshed; a newer one is reused (a refresh costs ~20 us).
The window is the time since the previous refresh: the scheduler asks at every job start,
so while jobs run it spans about the last second."""


def load_idle_cores() -> float:
    """Cores less the 1-minute load average (the fallback where /proc/stat is missing).

    Slow (a minute) and it counts this process's own threads as load."""
    return (os.cpu_count() or 1) - os.getloadavg()[0]


def _busy_seconds(stat: Path) -> float | None:
    """Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat."""
    try:
        with stat.open(encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz


class IdleCores:
    """Cores of the machine left idle since the previous reading (/proc/stat).

    The 1-minute load average used before lagged by a minute (a burst of other work long
    over still kept the wide session off, and on a shared 2-core machine it was off almost
    always). This process's own CPU counts as busy: subtracting it (a lone job runs with
    nothing of ours beside it) put the wide session on at 8 real-time clients too, where
    jobs that arrive while a wide one runs fight its second thread (+9% CPU per audio-second
    in an A/B). Thread-safe; ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        *,
        stat: Path = PROC_STAT,
        clock: Callable[[], float] = time.monotonic,
        cores: int | None = None,
    ) -> None:
        self._stat = stat
        self._clock = clock
        self._cores = cores or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None  # (when, machine busy seconds)
        self._value: float | None = None

    def __call__(self) -> float:
        now = self._clock()
        with self._lock:
            last = self._last
            if last is not None and now - last[0] < MIN_WINDOW_S:
                # Too short a window to measure (ticks are 10 ms): the last value stands.
                return load_idle_cores() if self._value is None else self._value
            busy = _busy_seconds(self._stat)
            if busy is None:
                return load_idle_cores()
            self._last = (now, busy)
            if last is None:
                return load_idle_cores()
            used = max(0.0, busy - last[1]) / (now - last[0])
            self._value = max(0.0, self._cores - used)
            return self._value
