"""choose_worker: filters plus each strategy, as the orchestrator drives it."""

from __future__ import annotations

from collections import Counter

import pytest
from duplex.registry.records import (
    Capabilities,
    PriorityRule,
    RoutingSettings,
    Strategy,
    WorkerMetrics,
    WorkerRecord,
)
from duplex.routing import (
    NoWorkerAvailable,
    SessionRequest,
    choose_worker,
    load,
    passes_filters,
)
from duplex.routing.strategies import priority_rank
from hypothesis import given, settings
from hypothesis import strategies as st

EN = SessionRequest(None, "en")


def _worker(
    name: str,
    *,
    queue: int = 0,
    active: int = 0,
    resident: tuple[str, ...] = ("piper-en",),
    available: tuple[str, ...] = ("piper-en", "tone"),
    adapter: str = "piper",
    languages: tuple[str, ...] = ("en",),
    extra: tuple[str, ...] = (),
    streaming: bool = True,
) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr="grpc://127.0.0.1:7001",
        adapter_type=adapter,
        capabilities=Capabilities(streaming=streaming, languages=languages, extra=extra),
        resident_models=resident,
        available_models=available,
        metrics=WorkerMetrics(queue_depth=queue, active_sessions=active),
        last_heartbeat=0.0,
    )


def _burst(
    request: SessionRequest,
    workers: list[WorkerRecord],
    routing: RoutingSettings,
    sessions: int,
) -> list[str]:
    """Route a burst the way the orchestrator does: count each decision as in flight."""
    inflight: Counter[str] = Counter()
    picks = []
    for cursor in range(sessions):
        decision = choose_worker(
            request,
            workers,
            settings=routing,
            drained=frozenset(),
            inflight=inflight,
            cursor=cursor,
        )
        inflight[decision.worker.name] += 1
        picks.append(decision.worker.name)
    return picks


def test_least_loaded_spreads_a_burst_3_3() -> None:
    """6 sessions over 2 equal workers alternate, 3 each, before any heartbeat."""
    picks = _burst(EN, [_worker("a"), _worker("b")], RoutingSettings(), 6)
    assert picks == ["a", "b", "a", "b", "a", "b"]


def test_least_loaded_fills_the_idle_worker_first() -> None:
    """A worker with 2 queued jobs gets sessions only once the other has caught up."""
    picks = _burst(EN, [_worker("a", queue=2), _worker("b")], RoutingSettings(), 4)
    assert picks == ["b", "b", "a", "b"]


def test_capability_aware_spreads_like_least_loaded() -> None:
    """capability_aware balances the capable workers by load."""
    routing = RoutingSettings(strategy=Strategy.CAPABILITY_AWARE)
    assert Counter(_burst(EN, [_worker("a"), _worker("b")], routing, 6)) == {"a": 3, "b": 3}


def test_round_robin_alternates_ignoring_load() -> None:
    """round_robin cycles through workers even when one is much busier."""
    routing = RoutingSettings(strategy=Strategy.ROUND_ROBIN)
    picks = _burst(EN, [_worker("b"), _worker("a", queue=40)], routing, 4)
    assert picks == ["a", "b", "a", "b"]


def test_prefer_resident_keeps_the_resident_worker_until_the_weight_is_exceeded() -> None:
    """With the other worker at 5 and weight 0.8, the resident one takes sessions up to load 9."""
    routing = RoutingSettings(strategy=Strategy.PREFER_RESIDENT, resident_weight=0.8)
    request = SessionRequest("tone", "en")
    workers = [
        _worker("res", queue=5, resident=("tone",)),
        _worker("cold", queue=5, resident=("piper-en",)),
    ]
    picks = _burst(request, workers, routing, 6)
    assert picks == ["res", "res", "res", "res", "res", "cold"]


def test_least_loaded_prefers_resident_models_when_configured() -> None:
    """prefer_resident_models narrows to workers holding the model, then least loaded."""
    request = SessionRequest("tone", "en")
    workers = [_worker("res", queue=4, resident=("tone",)), _worker("idle", queue=0)]
    on = choose_worker(
        request, workers, settings=RoutingSettings(), drained=frozenset(), inflight={}, cursor=0
    )
    assert (on.worker.name, on.needs_load) == ("res", False)
    off_settings = RoutingSettings(prefer_resident_models=False)
    off = choose_worker(
        request, workers, settings=off_settings, drained=frozenset(), inflight={}, cursor=0
    )
    assert (off.worker.name, off.needs_load) == ("idle", True)


def test_decision_reports_model_and_load_need() -> None:
    """model_id None means the worker's default and never needs a load."""
    decision = choose_worker(
        EN,
        [_worker("a", resident=())],
        settings=RoutingSettings(),
        drained=frozenset(),
        inflight={},
        cursor=0,
    )
    assert decision.model_id is None
    assert decision.needs_load is False


def test_capability_aware_never_picks_a_worker_lacking_a_capability() -> None:
    """Whatever the loads, a worker without zero_shot is never chosen when it is required."""
    routing = RoutingSettings(
        strategy=Strategy.CAPABILITY_AWARE, required_capabilities=("zero_shot",)
    )
    workers = [
        _worker("plain", queue=0),
        _worker("clone1", queue=9, extra=("zero_shot",)),
        _worker("clone2", queue=7, extra=("zero_shot",)),
    ]
    picks = _burst(EN, workers, routing, 20)
    assert "plain" not in picks
    assert set(picks) == {"clone1", "clone2"}


def test_priority_overflows_only_above_the_threshold() -> None:
    """GPU workers take sessions until each is above overflow_threshold; then CPU ones."""
    routing = RoutingSettings(
        strategy=Strategy.PRIORITY,
        worker_priority=(PriorityRule("cosyvoice2", 1), PriorityRule("piper", 2)),
        overflow_threshold=5,
    )
    workers = [
        _worker("gpu0", queue=4, adapter="cosyvoice2"),
        _worker("gpu1", queue=5, adapter="cosyvoice2"),
        _worker("cpu0", queue=0, adapter="piper"),
    ]
    picks = _burst(EN, workers, routing, 5)
    # Loads (gpu0, gpu1) go 4,5 -> 5,5 -> 5,6 -> 6,6: a GPU worker is chosen while one is
    # at or below 5; only when both are above it does cpu0 get sessions.
    assert picks == ["gpu0", "gpu1", "gpu0", "cpu0", "cpu0"]


def test_drained_worker_gets_no_sessions() -> None:
    """A drained worker is never chosen, under any strategy."""
    workers = [_worker("a"), _worker("b", queue=50)]
    for strategy in Strategy:
        for cursor in range(4):
            decision = choose_worker(
                EN,
                workers,
                settings=RoutingSettings(strategy=strategy),
                drained=frozenset({"a"}),
                inflight={},
                cursor=cursor,
            )
            assert decision.worker.name == "b"


def test_language_routes_to_the_worker_that_speaks_it() -> None:
    """ja goes to the Japanese worker and en to Piper."""
    workers = [_worker("piper"), _worker("kokoro", languages=("ja",), resident=("kokoro-ja",))]
    for lang, name in (("ja", "kokoro"), ("en", "piper")):
        decision = choose_worker(
            SessionRequest(None, lang),
            workers,
            settings=RoutingSettings(),
            drained=frozenset(),
            inflight={},
            cursor=0,
        )
        assert decision.worker.name == name


def test_nothing_fits_raises_with_the_reason() -> None:
    """The error says what was asked and why nothing fits."""
    with pytest.raises(
        NoWorkerAvailable, match=r"no worker for language='fr' \(languages offered: en\)"
    ):
        choose_worker(
            SessionRequest(None, "fr"),
            [_worker("a")],
            settings=RoutingSettings(),
            drained=frozenset(),
            inflight={},
            cursor=0,
        )


_names = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"])
_models = st.sampled_from(["m1", "m2", "m3"])
_workers = st.lists(
    st.builds(
        _worker,
        _names,
        queue=st.integers(0, 12),
        active=st.integers(0, 4),
        resident=st.lists(_models, max_size=2).map(tuple),
        available=st.lists(_models, max_size=3).map(tuple),  # "m3" is often on no worker
        adapter=st.sampled_from(["gpu", "cpu", "tone"]),
        languages=st.lists(st.sampled_from(["en", "ja"]), min_size=1, max_size=2).map(tuple),
        extra=st.lists(st.sampled_from(["zero_shot", "ssml"]), max_size=2).map(tuple),
        streaming=st.sampled_from([True, True, True, False]),
    ),
    max_size=8,
    unique_by=lambda w: w.name,
)
_settings = st.builds(
    RoutingSettings,
    strategy=st.sampled_from(list(Strategy)),
    prefer_resident_models=st.booleans(),
    resident_weight=st.sampled_from([0.0, 0.5, 0.8, 2.0]),
    required_capabilities=st.sampled_from([(), (), ("zero_shot",)]),
    worker_priority=st.just((PriorityRule("gpu", 1), PriorityRule("cpu", 2))),
    overflow_threshold=st.integers(0, 8),
)
_requests = st.builds(
    SessionRequest,
    st.none() | _models,
    st.sampled_from(["en", "en", "ja", "fr"]),
    st.sampled_from([(), (), ("ssml",)]),
)


@settings(max_examples=400, deadline=None)
@given(
    request=_requests,
    workers=_workers,
    routing=_settings,
    drained=st.frozensets(_names, max_size=2),
    inflight=st.dictionaries(_names, st.integers(0, 3)),
    cursor=st.integers(0, 1000),
)
def test_chosen_worker_always_passes_every_filter(
    request: SessionRequest,
    workers: list[WorkerRecord],
    routing: RoutingSettings,
    drained: frozenset[str],
    inflight: dict[str, int],
    cursor: int,
) -> None:
    """A decision is always a fitting worker, and NoWorkerAvailable only when none fits."""
    fitting = [w for w in workers if passes_filters(w, request, settings=routing, drained=drained)]
    try:
        decision = choose_worker(
            request, workers, settings=routing, drained=drained, inflight=inflight, cursor=cursor
        )
    except NoWorkerAvailable as exc:
        assert fitting == []
        assert exc.reason
        return
    assert decision.worker in fitting
    assert decision.model_id == request.model_id
    assert decision.needs_load == (
        request.model_id is not None and request.model_id not in decision.worker.resident_models
    )
    if routing.strategy is Strategy.PRIORITY:
        rank = priority_rank(decision.worker, routing.worker_priority)
        better_open = [
            w
            for w in fitting
            if priority_rank(w, routing.worker_priority) < rank
            and load(w, inflight) <= routing.overflow_threshold
        ]
        assert better_open == []
