"""The router: in-flight counts between heartbeats, live settings, drained workers, cursor."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

import pytest
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.router import Router
from duplex.registry.records import (
    Capabilities,
    RoutingSettings,
    Strategy,
    WorkerMetrics,
    WorkerRecord,
)
from duplex.routing import NoWorkerAvailable, SessionRequest

REQUEST = SessionRequest("tone-fast", "en")


def record(name: str, *, heartbeat: float, active: int = 0, queue: int = 0) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr=f"grpc://127.0.0.1:{7000 + len(name)}",
        adapter_type="tone",
        capabilities=Capabilities(languages=("en",)),
        resident_models=("tone-fast",),
        available_models=("tone-fast",),
        metrics=WorkerMetrics(queue_depth=queue, active_sessions=active),
        last_heartbeat=heartbeat,
    )


class FakeView:
    """The parts of RegistryView the router reads, set directly by the test."""

    def __init__(self, workers: list[WorkerRecord]) -> None:
        self.records = {w.name: w for w in workers}
        self.drained_names: frozenset[str] = frozenset()
        self.settings = RoutingSettings()
        self.ok = True

    def workers(self) -> Mapping[str, WorkerRecord]:
        return dict(self.records)

    def drained(self) -> frozenset[str]:
        return self.drained_names

    def routing(self) -> RoutingSettings:
        return self.settings

    def redis_ok(self) -> bool:
        return self.ok


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make_router(view: FakeView, clock: Clock, metrics: OrchestratorMetrics | None = None) -> Router:
    return Router(view, RoutingSettings(), metrics=metrics, heartbeat_margin_s=0.25, clock=clock)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def two_equal(clock: Clock) -> FakeView:
    return FakeView(
        [record("w1", heartbeat=clock.now - 0.1), record("w2", heartbeat=clock.now - 0.1)]
    )


def test_a_burst_of_six_over_two_equal_workers_goes_three_and_three(clock: Clock) -> None:
    """Sessions routed since the last heartbeat count as load: 3/3, not 6/0."""
    router = make_router(two_equal(clock), clock)
    chosen = Counter(router.route(REQUEST).worker.name for _ in range(6))
    assert chosen == {"w1": 3, "w2": 3}
    assert router.inflight() == {"w1": 3, "w2": 3}


def test_a_heartbeat_after_the_routing_time_clears_the_in_flight_count(clock: Clock) -> None:
    """Once the worker's heartbeat can show the session, the router stops counting it."""
    view = two_equal(clock)
    router = make_router(view, clock)
    router.route(REQUEST)
    routed_at = clock.now
    # A heartbeat inside the margin may predate the stream opening: still counted.
    view.records["w1"] = replace(view.records["w1"], last_heartbeat=routed_at + 0.1)
    assert router.inflight() == {"w1": 1}
    view.records["w1"] = replace(
        view.records["w1"],
        last_heartbeat=routed_at + 0.3,
        metrics=WorkerMetrics(active_sessions=1),
    )
    assert router.inflight() == {}
    # The heartbeat now carries the session: the next one goes to the other worker.
    assert router.route(REQUEST).worker.name == "w2"


def test_release_stops_counting_a_session_that_ended(clock: Clock) -> None:
    """A session that closes (or never opened) before the next heartbeat is released."""
    router = make_router(two_equal(clock), clock)
    first = router.route(REQUEST)
    second = router.route(REQUEST)
    router.release(first)
    assert router.inflight() == {second.worker.name: 1}
    router.release(first)  # twice is harmless
    assert router.inflight() == {second.worker.name: 1}


def test_a_worker_that_leaves_the_view_loses_its_counts(clock: Clock) -> None:
    """No count survives for a worker that expired."""
    view = two_equal(clock)
    router = make_router(view, clock)
    router.route(REQUEST)
    router.route(REQUEST)
    del view.records["w1"]
    assert router.inflight() == {"w2": 1}


def test_the_settings_are_read_at_every_decision(clock: Clock) -> None:
    """A strategy change in Redis (the view) governs the very next session."""
    view = FakeView(
        [
            record("w1", heartbeat=clock.now, queue=0),
            record("w2", heartbeat=clock.now, queue=5),
        ]
    )
    router = make_router(view, clock)
    assert [router.route(REQUEST).worker.name for _ in range(2)] == ["w1", "w1"]
    view.settings = RoutingSettings(strategy=Strategy.ROUND_ROBIN)
    names = [router.route(REQUEST).worker.name for _ in range(4)]
    assert sorted(names) == ["w1", "w1", "w2", "w2"]
    assert names[0] != names[1] and names[1] != names[2]
    assert router.settings().strategy is Strategy.ROUND_ROBIN


def test_a_drained_worker_gets_no_session(clock: Clock) -> None:
    """Drained in Redis: never chosen, even when it is the least loaded."""
    view = FakeView([record("w1", heartbeat=clock.now), record("w2", heartbeat=clock.now, queue=9)])
    view.drained_names = frozenset({"w1"})
    router = make_router(view, clock)
    assert {router.route(REQUEST).worker.name for _ in range(5)} == {"w2"}
    view.drained_names = frozenset({"w1", "w2"})
    with pytest.raises(NoWorkerAvailable):
        router.route(REQUEST)


def test_exclude_skips_workers_that_failed_the_session(clock: Clock) -> None:
    """Failover routing never returns a worker in `exclude`."""
    router = make_router(two_equal(clock), clock)
    assert {router.route(REQUEST, exclude=frozenset({"w1"})).worker.name for _ in range(4)} == {
        "w2"
    }
    with pytest.raises(NoWorkerAvailable):
        router.route(REQUEST, exclude=frozenset({"w1", "w2"}))


def test_decisions_are_counted_by_strategy_and_worker(clock: Clock) -> None:
    """routing_decisions_total and routing_decision_seconds are recorded per decision."""
    metrics = OrchestratorMetrics()
    router = make_router(two_equal(clock), clock, metrics)
    for _ in range(4):
        router.route(REQUEST)
    get = metrics.registry.get_sample_value
    labels = {"strategy": "least_loaded"}
    assert get("duplex_orch_routing_decisions_total", {**labels, "worker": "w1"}) == 2
    assert get("duplex_orch_routing_decisions_total", {**labels, "worker": "w2"}) == 2
    assert get("duplex_orch_routing_decision_seconds_count") == 4


def test_ready_needs_redis_and_a_worker_that_takes_sessions(clock: Clock) -> None:
    """ready(): Redis reachable and at least one live, undrained worker."""
    view = two_equal(clock)
    router = make_router(view, clock)
    assert router.readiness().ready
    view.drained_names = frozenset({"w1", "w2"})
    assert not router.readiness().ready
    view.drained_names = frozenset()
    view.ok = False
    assert not router.readiness().ready
    view.ok = True
    view.records.clear()
    assert not router.readiness().ready
