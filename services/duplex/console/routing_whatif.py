"""What-if routing: the worker each strategy would pick for a request, right now.

Computed by the orchestrator's own pure function (`duplex.routing.choose_worker`) over the
registry snapshot and the in-flight counts summed over every live orchestrator, so the
answer is the one an orchestrator would give, not a re-implementation of it. What no
snapshot can tell is each orchestrator's private rotation counter (round robin, and ties
under the balancing strategies): the pick is shown for the counter at 0, with every other
worker that a later counter would pick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from duplex.registry.orchestrators import OrchestratorRecord
from duplex.registry.records import RoutingSettings, Strategy, WorkerRecord
from duplex.routing import (
    NoWorkerAvailable,
    SessionRequest,
    choose_worker,
    eligible_workers,
    load,
    passes_filters,
)


@dataclass(frozen=True)
class StrategyPick:
    """What one strategy would do with the request."""

    strategy: Strategy
    active: bool  # the strategy in force now
    worker: str | None  # None: no worker qualifies (``reason`` says why)
    needs_load: bool = False
    reason: str | None = None
    # Further workers the same strategy picks as an orchestrator's rotation counter advances.
    rotates_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerLine:
    """One live worker as the what-if saw it."""

    name: str
    adapter_type: str
    queue_depth: int
    inflight: int
    load: int  # queue_depth + inflight: what the strategies compare
    resident: bool  # the requested model is loaded (False when no model was asked for)
    drained: bool
    eligible: bool  # passes every filter for this request


@dataclass(frozen=True)
class WhatIf:
    """The answer for one request, under every strategy."""

    request: SessionRequest
    picks: tuple[StrategyPick, ...]
    workers: tuple[WorkerLine, ...]
    inflight_total: int
    orchestrators: int


def summed_inflight(records: Iterable[OrchestratorRecord]) -> dict[str, int]:
    """Sessions routed to each worker and not yet in its heartbeat, over every orchestrator."""
    total: dict[str, int] = {}
    for record in records:
        for worker, count in record.inflight.items():
            total[worker] = total.get(worker, 0) + max(count, 0)
    return total


def what_if(
    request: SessionRequest,
    workers: Mapping[str, WorkerRecord],
    *,
    settings: RoutingSettings,
    drained: frozenset[str],
    inflight: Mapping[str, int],
    orchestrators: int = 0,
) -> WhatIf:
    """Each strategy's pick for ``request`` with the active parameters (never raises for an
    unknown model or language: that pick says "no worker" and why)."""
    live = sorted(workers.values(), key=lambda w: w.name)
    picks = tuple(
        _pick(request, live, replace(settings, strategy=strategy), drained, inflight)
        for strategy in Strategy
    )
    picks = tuple(replace(p, active=p.strategy is settings.strategy) for p in picks)
    lines = tuple(
        WorkerLine(
            name=w.name,
            adapter_type=w.adapter_type,
            queue_depth=w.metrics.queue_depth,
            inflight=inflight.get(w.name, 0),
            load=load(w, inflight),
            resident=request.model_id is not None and request.model_id in w.resident_models,
            drained=w.name in drained,
            eligible=passes_filters(w, request, settings=settings, drained=drained),
        )
        for w in live
    )
    return WhatIf(
        request=request,
        picks=picks,
        workers=lines,
        inflight_total=sum(inflight.get(w.name, 0) for w in live),
        orchestrators=orchestrators,
    )


def _pick(
    request: SessionRequest,
    workers: Sequence[WorkerRecord],
    settings: RoutingSettings,
    drained: frozenset[str],
    inflight: Mapping[str, int],
) -> StrategyPick:
    def choose(cursor: int) -> tuple[str, bool]:
        decision = choose_worker(
            request,
            workers,
            settings=settings,
            drained=drained,
            inflight=inflight,
            cursor=cursor,
        )
        return decision.worker.name, decision.needs_load

    try:
        worker, needs_load = choose(0)
        # One full turn of any counter visits every pick a rotation can make.
        turn = len(eligible_workers(request, workers, settings=settings, drained=drained))
    except NoWorkerAvailable as exc:
        return StrategyPick(settings.strategy, False, None, reason=exc.reason)
    others: list[str] = []
    for cursor in range(1, turn):
        name, _ = choose(cursor)
        if name != worker and name not in others:
            others.append(name)
    return StrategyPick(settings.strategy, False, worker, needs_load, None, tuple(others))
