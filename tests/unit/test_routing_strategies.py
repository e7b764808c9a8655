"""The strategy functions over already-filtered workers."""

from __future__ import annotations

from duplex.registry.records import Capabilities, PriorityRule, WorkerMetrics, WorkerRecord
from duplex.routing.strategies import (
    least_loaded,
    load,
    prefer_resident,
    priority_rank,
    priority_tier,
    resident_first,
    round_robin,
)

NONE_INFLIGHT: dict[str, int] = {}


def _worker(
    name: str,
    *,
    queue: int = 0,
    active: int = 0,
    resident: tuple[str, ...] = (),
    adapter: str = "piper",
) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr="grpc://127.0.0.1:7001",
        adapter_type=adapter,
        capabilities=Capabilities(languages=("en",)),
        resident_models=resident,
        available_models=("m",),
        metrics=WorkerMetrics(queue_depth=queue, active_sessions=active),
        last_heartbeat=0.0,
    )


def _names(workers: list[WorkerRecord]) -> list[str]:
    return [w.name for w in workers]


def test_load_counts_queue_depth_and_inflight() -> None:
    """Load is the reported queue depth plus sessions routed since the heartbeat."""
    w = _worker("a", queue=3)
    assert load(w, {}) == 3
    assert load(w, {"a": 2, "b": 9}) == 5


def test_least_loaded_picks_lowest_queue_depth() -> None:
    """The worker with the least queued work wins whatever the cursor."""
    workers = [_worker("a", queue=4), _worker("b", queue=1), _worker("c", queue=2)]
    assert {least_loaded(workers, inflight=NONE_INFLIGHT, cursor=k).name for k in range(5)} == {"b"}


def test_least_loaded_counts_inflight() -> None:
    """Sessions routed since the last heartbeat count as load."""
    workers = [_worker("a", queue=0), _worker("b", queue=1)]
    assert least_loaded(workers, inflight={"a": 2}, cursor=0).name == "b"


def test_least_loaded_breaks_ties_by_active_sessions() -> None:
    """Equal queues: fewer active sessions (plus in-flight) wins."""
    workers = [_worker("a", active=3), _worker("b", active=1)]
    assert least_loaded(workers, inflight=NONE_INFLIGHT, cursor=0).name == "b"
    assert least_loaded(workers, inflight=NONE_INFLIGHT, cursor=1).name == "b"


def test_least_loaded_rotates_remaining_ties_with_the_cursor() -> None:
    """Fully tied workers take turns in name order as the cursor advances."""
    workers = [_worker("c"), _worker("a"), _worker("b"), _worker("z", queue=1)]
    picks = [least_loaded(workers, inflight=NONE_INFLIGHT, cursor=k).name for k in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_resident_first_narrows_only_when_someone_holds_the_model() -> None:
    """Workers with the model loaded if any; otherwise all; no model: all."""
    workers = [_worker("a", resident=("m",)), _worker("b")]
    assert _names(list(resident_first(workers, "m"))) == ["a"]
    assert _names(list(resident_first(workers, "other"))) == ["a", "b"]
    assert _names(list(resident_first(workers, None))) == ["a", "b"]


def _prefer(resident_queue: int, other_queue: int, weight: float = 0.8) -> str:
    workers = [
        _worker("res", queue=resident_queue, resident=("m",)),
        _worker("oth", queue=other_queue),
    ]
    chosen = prefer_resident(
        workers, model_id="m", resident_weight=weight, inflight=NONE_INFLIGHT, cursor=0
    )
    return chosen.name


def test_prefer_resident_tolerates_up_to_the_weight_more_load() -> None:
    """With weight 0.8 and the other at 5, resident wins up to 9 and loses at 10."""
    assert _prefer(5, 5) == "res"
    assert _prefer(9, 5) == "res"
    assert _prefer(10, 5) == "oth"
    assert _prefer(1, 5) == "res"


def test_prefer_resident_against_an_idle_worker() -> None:
    """Other idle: the margin is weight x 1 job (0.8 keeps only an idle resident; 1.0 allows 1)."""
    assert _prefer(0, 0) == "res"
    assert _prefer(1, 0) == "oth"
    assert _prefer(1, 0, weight=1.0) == "res"
    assert _prefer(2, 0, weight=1.0) == "oth"


def test_prefer_resident_with_zero_weight_is_plain_least_loaded_with_resident_on_ties() -> None:
    """Weight 0: resident only while it is no busier than the alternative."""
    assert _prefer(3, 3, weight=0.0) == "res"
    assert _prefer(4, 3, weight=0.0) == "oth"


def test_prefer_resident_falls_back_to_least_loaded() -> None:
    """No model, or no resident/non-resident split: least loaded."""
    workers = [_worker("a", queue=3, resident=("m",)), _worker("b", queue=1, resident=("m",))]
    assert (
        prefer_resident(workers, model_id="m", resident_weight=0.8, inflight={}, cursor=0).name
        == "b"
    )
    plain = [_worker("a", queue=3, resident=("m",)), _worker("b", queue=2)]
    assert (
        prefer_resident(plain, model_id=None, resident_weight=0.8, inflight={}, cursor=0).name
        == "b"
    )


def test_round_robin_goes_through_workers_in_name_order() -> None:
    """The cursor walks the name-sorted workers, ignoring load."""
    workers = [_worker("b", queue=0), _worker("a", queue=50), _worker("c")]
    assert [round_robin(workers, cursor=k).name for k in range(5)] == ["a", "b", "c", "a", "b"]


def test_priority_rank_puts_unlisted_adapters_last() -> None:
    """Listed adapter types get their priority; others come after the last listed one."""
    rules = (PriorityRule("cosyvoice2", 1), PriorityRule("piper", 2))
    assert priority_rank(_worker("g", adapter="cosyvoice2"), rules) == 1
    assert priority_rank(_worker("c", adapter="piper"), rules) == 2
    assert priority_rank(_worker("t", adapter="tone"), rules) == 3
    assert priority_rank(_worker("t", adapter="tone"), ()) == 1


RULES = (PriorityRule("gpu", 1), PriorityRule("cpu", 2))


def _tier(gpu_queues: list[int], cpu_queues: list[int], threshold: int = 5) -> list[str]:
    workers = [_worker(f"gpu{i}", queue=q, adapter="gpu") for i, q in enumerate(gpu_queues)]
    workers += [_worker(f"cpu{i}", queue=q, adapter="cpu") for i, q in enumerate(cpu_queues)]
    tier = priority_tier(workers, rules=RULES, overflow_threshold=threshold, inflight={})
    return _names(tier)


def test_priority_stays_on_the_first_tier_up_to_the_threshold() -> None:
    """A priority-1 worker at exactly the threshold still takes sessions."""
    assert _tier([5], [0]) == ["gpu0"]
    assert _tier([9, 5], [0]) == ["gpu1"]


def test_priority_overflows_only_when_every_first_tier_worker_exceeds_it() -> None:
    """Priority 2 is used once all priority-1 workers are above the threshold."""
    assert _tier([6, 7], [0, 9]) == ["cpu0"]


def test_priority_with_every_tier_over_the_threshold_uses_the_top_tier() -> None:
    """When everything overflows, the preferred tier takes the load."""
    assert _tier([8, 7], [9]) == ["gpu0", "gpu1"]
