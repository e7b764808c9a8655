"""Ended sessions' cyclic garbage is collected in small batches."""

from __future__ import annotations

import gc
import weakref

import pytest
from duplex.orchestrator.session.sweeper import CycleSweeper


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Cyclic:
    """An ended session in miniature: an object graph that refers to itself."""

    def __init__(self) -> None:
        self.me = self


def test_a_full_collection_follows_every_batch_of_ended_sessions() -> None:
    clock, collections = _Clock(), []
    sweeper = CycleSweeper(
        every=3, min_interval_s=1.0, clock=clock, collect=lambda: collections.append(1)
    )
    for _ in range(7):
        clock.now += 1
        sweeper.session_ended()
    assert len(collections) == 2 == sweeper.sweeps


def test_a_burst_of_endings_collects_once_within_the_interval() -> None:
    clock, collections = _Clock(), []
    sweeper = CycleSweeper(
        every=2, min_interval_s=5.0, clock=clock, collect=lambda: collections.append(1)
    )
    clock.now += 5
    for _ in range(20):
        sweeper.session_ended()
    assert len(collections) == 1
    clock.now += 5
    sweeper.session_ended()  # the batch waiting since the first sweep goes now
    assert len(collections) == 2


def test_with_many_live_sessions_a_batch_is_half_as_many() -> None:
    clock, collections = _Clock(), []
    sweeper = CycleSweeper(
        every=3, min_interval_s=0.0, clock=clock, collect=lambda: collections.append(1)
    )
    for _ in range(99):
        sweeper.session_ended(live=200)
    assert collections == []
    sweeper.session_ended(live=200)
    assert len(collections) == 1


def test_the_sweep_frees_cyclic_garbage_that_young_collections_left() -> None:
    clock = _Clock()
    sweeper = CycleSweeper(every=2, min_interval_s=0.0, clock=clock)
    dead = _Cyclic()
    gc.collect(1)  # it survives young collections (a session lives for seconds) ...
    ref = weakref.ref(dead)
    del dead
    gc.collect(1)  # ... and is in the oldest generation by the time it ends
    assert ref() is not None
    sweeper.session_ended()
    sweeper.session_ended()
    assert ref() is None


def test_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every"):
        CycleSweeper(every=0)
