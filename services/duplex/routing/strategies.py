"""The deployment guide's load-balancing strategies, as pure functions over candidates.

Every function takes workers that already passed the filters (a non-empty sequence)
and never does I/O. Load is ``metrics.queue_depth`` plus the sessions the caller has
routed to the worker since its last heartbeat (``inflight``), so that a burst of
sessions spreads out before the heartbeats catch up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from duplex.registry.records import PriorityRule, WorkerRecord


def load(worker: WorkerRecord, inflight: Mapping[str, int]) -> int:
    """Queued work the worker has, counting sessions routed since its last heartbeat."""
    return worker.metrics.queue_depth + inflight.get(worker.name, 0)


def least_loaded(
    workers: Sequence[WorkerRecord], *, inflight: Mapping[str, int], cursor: int
) -> WorkerRecord:
    """Lowest load; ties by active sessions (+ in-flight); remaining ties rotate with cursor.

    The rotation is over the tied workers sorted by name, so equal workers take
    turns as the caller's cursor advances.
    """

    def key(w: WorkerRecord) -> tuple[int, int]:
        return load(w, inflight), w.metrics.active_sessions + inflight.get(w.name, 0)

    best = min(key(w) for w in workers)
    tied = sorted((w for w in workers if key(w) == best), key=lambda w: w.name)
    return tied[cursor % len(tied)]


def resident_first(workers: Sequence[WorkerRecord], model_id: str | None) -> Sequence[WorkerRecord]:
    """The workers with the model already loaded, if any; otherwise all of them.

    The guide's "prefer workers with model already loaded" step before least loaded
    (``prefer_resident_models: true``).
    """
    if model_id is None:
        return workers
    resident = [w for w in workers if model_id in w.resident_models]
    return resident or workers


def prefer_resident(
    workers: Sequence[WorkerRecord],
    *,
    model_id: str | None,
    resident_weight: float,
    inflight: Mapping[str, int],
    cursor: int,
) -> WorkerRecord:
    """The least-loaded worker with the model resident, unless it is too much busier.

    With ``r`` the best resident worker's load and ``o`` the best other worker's
    load, the resident worker is kept while ``r - o <= resident_weight * max(o, 1)``:
    up to ``resident_weight`` (0.8 = 80 %) more queued work than the alternative,
    and, when the alternative is idle (``o == 0``), up to ``resident_weight`` jobs
    (so with 0.8 an idle resident worker is kept and a resident worker with one
    queued job loses to an idle non-resident one). Without a model, or when all or
    none of the workers hold it, this is `least_loaded`.
    """
    if model_id is None:
        return least_loaded(workers, inflight=inflight, cursor=cursor)
    resident = [w for w in workers if model_id in w.resident_models]
    others = [w for w in workers if model_id not in w.resident_models]
    if not resident or not others:
        return least_loaded(workers, inflight=inflight, cursor=cursor)
    best_resident = least_loaded(resident, inflight=inflight, cursor=cursor)
    best_other = least_loaded(others, inflight=inflight, cursor=cursor)
    r, o = load(best_resident, inflight), load(best_other, inflight)
    return best_resident if r - o <= resident_weight * max(o, 1) else best_other


def round_robin(workers: Sequence[WorkerRecord], *, cursor: int) -> WorkerRecord:
    """Workers in name order, one after the other as the cursor advances (load ignored)."""
    ordered = sorted(workers, key=lambda w: w.name)
    return ordered[cursor % len(ordered)]


def priority_rank(worker: WorkerRecord, rules: Sequence[PriorityRule]) -> int:
    """The worker's priority (1 first); adapter types no rule names come after all others."""
    ranks = [r.priority for r in rules if r.adapter_type == worker.adapter_type]
    if ranks:
        return min(ranks)
    return max((r.priority for r in rules), default=0) + 1


def priority_tier(
    workers: Sequence[WorkerRecord],
    *,
    rules: Sequence[PriorityRule],
    overflow_threshold: int,
    inflight: Mapping[str, int],
) -> list[WorkerRecord]:
    """The workers to balance over under the ``priority`` strategy.

    The best tier (lowest priority number) that has a worker whose load is at most
    ``overflow_threshold``, narrowed to those workers: a lower tier is used only when
    every worker of each better tier is above the threshold. When every tier is
    above it, the whole top tier.
    """
    tiers = sorted({priority_rank(w, rules) for w in workers})
    for tier in tiers:
        open_ = [
            w
            for w in workers
            if priority_rank(w, rules) == tier and load(w, inflight) <= overflow_threshold
        ]
        if open_:
            return open_
    return [w for w in workers if priority_rank(w, rules) == tiers[0]]
