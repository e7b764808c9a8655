"""IdleCores: the machine's idle cores over the last window, from /proc/stat."""

from __future__ import annotations

from pathlib import Path

import pytest
from duplex.worker.idle_cores import IdleCores, load_idle_cores


class Clocks:
    """A fake /proc/stat file and monotonic clock moved by the test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.now = 100.0
        self.busy_ticks = 0
        self.idle_ticks = 0
        self.write()

    def write(self) -> None:
        # user nice system idle iowait irq softirq steal guest guest_nice
        self.path.write_text(
            f"cpu  {self.busy_ticks} 0 0 {self.idle_ticks} 0 0 0 0 0 0\ncpu0 0 0 0 0\n",
            encoding="ascii",
        )

    def advance(self, seconds: float, *, others: float, own: float, cores: int = 2) -> None:
        """``seconds`` pass; other processes use ``others`` cores, this one ``own``."""
        hz = 100
        busy = int((others + own) * seconds * hz)
        self.busy_ticks += busy
        self.idle_ticks += int(cores * seconds * hz) - busy
        self.now += seconds
        self.write()


@pytest.fixture
def clocks(tmp_path: Path) -> Clocks:
    return Clocks(tmp_path / "stat")


def idle(clocks: Clocks) -> IdleCores:
    return IdleCores(stat=clocks.path, clock=lambda: clocks.now, cores=2)


def test_our_own_busy_threads_count_as_load(clocks: Clocks) -> None:
    """This process kept one core busy (clauses of other sessions): one core idle."""
    cores = idle(clocks)
    cores()  # the first call opens the window
    clocks.advance(2.0, others=0.0, own=1.0)
    assert cores() == pytest.approx(1.0, abs=0.05)


def test_other_processes_load_is_seen_within_a_second(clocks: Clocks) -> None:
    """Another process took 1.3 cores over the last second, this one 0.2: half a core idle."""
    cores = idle(clocks)
    cores()
    clocks.advance(1.0, others=1.3, own=0.2)
    assert cores() == pytest.approx(0.5, abs=0.05)


def test_a_reading_is_reused_for_half_a_second(clocks: Clocks) -> None:
    """Asked at every job start: a call within the window reuses the last value."""
    cores = idle(clocks)
    cores()
    clocks.advance(1.0, others=0.0, own=0.0)
    assert cores() == pytest.approx(2.0, abs=0.05)
    clocks.advance(0.1, others=2.0, own=0.0)
    assert cores() == pytest.approx(2.0, abs=0.05)
    clocks.advance(1.0, others=2.0, own=0.0)
    assert cores() < 0.2


def test_without_proc_stat_the_load_average_decides(tmp_path: Path) -> None:
    cores = IdleCores(stat=tmp_path / "missing", cores=2)
    # The load average moves slowly (every 5 s): the two readings are close.
    assert cores() == pytest.approx(load_idle_cores(), abs=0.5)
