"""A failover prefers a worker on another host than the failed one (its host may be cut off,
its siblings still in the view until their heartbeats expire)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

import pytest
from duplex.orchestrator.router import Router
from duplex.registry.records import Capabilities, RoutingSettings, WorkerMetrics, WorkerRecord
from duplex.routing import NoWorkerAvailable, SessionRequest

REQUEST = SessionRequest("tone-fast", "en")


def record(name: str, addr: str, *, queue: int = 0) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr=addr,
        adapter_type="tone",
        capabilities=Capabilities(languages=("en",)),
        resident_models=("tone-fast",),
        available_models=("tone-fast",),
        metrics=WorkerMetrics(queue_depth=queue, active_sessions=0),
        last_heartbeat=time.time(),
    )


class View:
    def __init__(self, workers: list[WorkerRecord]) -> None:
        self.records = {w.name: w for w in workers}

    def workers(self) -> Mapping[str, WorkerRecord]:
        return self.records

    def drained(self) -> frozenset[str]:
        return frozenset()

    def routing(self) -> RoutingSettings:
        return RoutingSettings()

    def redis_ok(self) -> bool:
        return True


def router(workers: list[WorkerRecord]) -> Router:
    return Router(cast(Any, View(workers)), RoutingSettings())


def test_a_failover_goes_to_another_host_even_when_a_sibling_is_less_loaded() -> None:
    r = router([
        record("a1", "grpc://10.0.0.3:7001"),
        record("a2", "grpc://10.0.0.3:7002"),  # the idle sibling on the failed host
        record("b1", "grpc://10.0.0.2:7001", queue=4),
    ])  # fmt: skip
    for _ in range(3):
        assert r.route(REQUEST, exclude=frozenset({"a1"})).worker.name == "b1"
    # A first decision knows no failed host: the least loaded wins.
    assert r.route(REQUEST).worker.name in {"a1", "a2"}


def test_with_no_other_host_the_sibling_still_takes_the_session() -> None:
    r = router([record("a1", "grpc://10.0.0.3:7001"), record("a2", "grpc://10.0.0.3:7002")])
    assert r.route(REQUEST, exclude=frozenset({"a1"})).worker.name == "a2"
    other_language = router([
        record("a1", "grpc://10.0.0.3:7001"),
        record("a2", "grpc://10.0.0.3:7002"),
        replace(record("b1", "grpc://10.0.0.2:7001"),
                capabilities=Capabilities(languages=("ja",))),
    ])  # fmt: skip
    assert other_language.route(REQUEST, exclude=frozenset({"a1"})).worker.name == "a2"
    with pytest.raises(NoWorkerAvailable):
        other_language.route(REQUEST, exclude=frozenset({"a1", "a2"}))


def test_a_failover_avoids_the_failed_host_after_the_failed_worker_left_the_view() -> None:
    """The failed worker's record expired first; its sibling on the same host has not yet."""
    view = View([
        record("a1", "grpc://10.0.0.3:7001"),
        record("a2", "grpc://10.0.0.3:7002", queue=0),
        record("b1", "grpc://10.0.0.2:7001", queue=4),
    ])  # fmt: skip
    r = Router(cast(Any, view), RoutingSettings())
    first = r.route(REQUEST, exclude=frozenset({"a2", "b1"}))
    assert first.worker.name == "a1"
    del view.records["a1"]  # its heartbeat expired before the session noticed the silence
    for _ in range(3):
        assert r.route(REQUEST, exclude=frozenset({"a1"})).worker.name == "b1"
