"""choose_worker: the filters, then the configured strategy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from duplex.registry.records import RoutingSettings, Strategy, WorkerRecord
from duplex.routing.filters import eligible_workers
from duplex.routing.request import Decision, SessionRequest
from duplex.routing.strategies import (
    least_loaded,
    prefer_resident,
    priority_tier,
    resident_first,
    round_robin,
)


def choose_worker(
    request: SessionRequest,
    workers: Sequence[WorkerRecord],
    *,
    settings: RoutingSettings,
    drained: frozenset[str],
    inflight: Mapping[str, int],
    cursor: int,
) -> Decision:
    """Pick the worker for a new session; raises NoWorkerAvailable with the reason.

    ``inflight`` counts sessions the caller routed to each worker since that worker's
    last heartbeat; ``cursor`` is a counter the caller advances once per decision
    (round robin and tie rotation use it). Under ``least_loaded``,
    ``capability_aware`` and within a ``priority`` tier, ``prefer_resident_models``
    first narrows the candidates to workers with the model loaded, if there are any.
    ``capability_aware`` balances like ``least_loaded``: the capability filters it
    adds in the guide apply under every strategy here.
    """
    candidates = eligible_workers(request, workers, settings=settings, drained=drained)
    model_id = request.model_id

    def balanced(pool: Sequence[WorkerRecord]) -> WorkerRecord:
        if settings.prefer_resident_models:
            pool = resident_first(pool, model_id)
        return least_loaded(pool, inflight=inflight, cursor=cursor)

    match settings.strategy:
        case Strategy.LEAST_LOADED | Strategy.CAPABILITY_AWARE:
            worker = balanced(candidates)
        case Strategy.PREFER_RESIDENT:
            worker = prefer_resident(
                candidates,
                model_id=model_id,
                resident_weight=settings.resident_weight,
                inflight=inflight,
                cursor=cursor,
            )
        case Strategy.ROUND_ROBIN:
            worker = round_robin(candidates, cursor=cursor)
        case Strategy.PRIORITY:
            worker = balanced(
                priority_tier(
                    candidates,
                    rules=settings.worker_priority,
                    overflow_threshold=settings.overflow_threshold,
                    inflight=inflight,
                )
            )
    needs_load = model_id is not None and model_id not in worker.resident_models
    return Decision(worker=worker, model_id=model_id, needs_load=needs_load)
