"""The routing page's pure parts: the form's validation, and the what-if computed by the
orchestrator's own routing functions for each of the five strategies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest
from duplex.console.routing_form import (
    FieldError,
    RoutingFormError,
    format_capabilities,
    format_priority,
    known_capabilities,
    parse_routing_form,
)
from duplex.console.routing_whatif import StrategyPick, summed_inflight, what_if
from duplex.registry.orchestrators import OrchestratorRecord
from duplex.registry.records import (
    Capabilities,
    PriorityRule,
    RoutingSettings,
    Strategy,
    WorkerMetrics,
    WorkerRecord,
)
from duplex.routing import SessionRequest

KNOWN = frozenset({"streaming", "zero_shot", "emotive"})
CURRENT = RoutingSettings(
    strategy=Strategy.LEAST_LOADED,
    prefer_resident_models=True,
    resident_weight=0.8,
    required_capabilities=(),
    worker_priority=(PriorityRule("piper", 1),),
    overflow_threshold=5,
)


def _worker(
    name: str,
    *,
    adapter: str = "piper",
    queue: int = 0,
    resident: tuple[str, ...] = ("m1",),
    available: tuple[str, ...] = ("m1", "m2"),
    languages: tuple[str, ...] = ("en",),
    extra: tuple[str, ...] = (),
) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr=f"grpc://127.0.0.1:{7000 + len(name)}",
        adapter_type=adapter,
        capabilities=Capabilities(languages=languages, extra=extra),
        resident_models=resident,
        available_models=available,
        metrics=WorkerMetrics(queue_depth=queue),
        last_heartbeat=0.0,
    )


def _errors(form: dict[str, str]) -> dict[str, str]:
    with pytest.raises(RoutingFormError) as caught:
        parse_routing_form(form, CURRENT, capabilities=KNOWN)
    return {e.field: e.message for e in caught.value.errors}


# -- the form -------------------------------------------------------------------------------


def test_a_strategy_toggle_changes_only_the_strategy() -> None:
    settings = parse_routing_form({"strategy": "round_robin"}, CURRENT, capabilities=KNOWN)
    assert settings == replace(CURRENT, strategy=Strategy.ROUND_ROBIN)


def test_a_full_form_sets_every_parameter() -> None:
    form = {
        "strategy": "priority",
        "prefer_resident_models": "false",
        "resident_weight": " 1.5 ",
        "overflow_threshold": "0",
        "required_capabilities": "emotive, zero_shot, emotive,",
        "worker_priority": "cosyvoice2=1\n\n piper = 2 \n",
    }
    settings = parse_routing_form(form, CURRENT, capabilities=KNOWN)
    assert settings == RoutingSettings(
        strategy=Strategy.PRIORITY,
        prefer_resident_models=False,
        resident_weight=1.5,
        required_capabilities=("emotive", "zero_shot"),
        worker_priority=(PriorityRule("cosyvoice2", 1), PriorityRule("piper", 2)),
        overflow_threshold=0,
    )


def test_blank_lists_clear_the_capabilities_and_the_priorities() -> None:
    settings = parse_routing_form(
        {"required_capabilities": "  ", "worker_priority": "\n"},
        replace(CURRENT, required_capabilities=("emotive",)),
        capabilities=KNOWN,
    )
    assert settings.required_capabilities == ()
    assert settings.worker_priority == ()


def test_the_form_text_of_settings_parses_back_to_the_same_settings() -> None:
    settings = replace(
        CURRENT,
        required_capabilities=("emotive", "zero_shot"),
        worker_priority=(PriorityRule("cosyvoice2", 1), PriorityRule("piper", 3)),
    )
    form = {
        "required_capabilities": format_capabilities(settings.required_capabilities),
        "worker_priority": format_priority(settings.worker_priority),
    }
    assert parse_routing_form(form, CURRENT, capabilities=KNOWN) == settings


def test_an_unknown_strategy_is_refused_naming_the_five() -> None:
    message = _errors({"strategy": "fastest"})["strategy"]
    assert "unknown strategy 'fastest'" in message
    for s in Strategy:
        assert s.value in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("-0.1", "-0.1 is out of range: 0 to 1000"),
        ("abc", "'abc' is not a number"),
        ("nan", "nan is out of range"),
        ("inf", "inf is out of range"),
        ("1e9", "1e9 is out of range"),
        ("", "'' is not a number"),
    ],
)
def test_a_bad_resident_weight_is_refused(raw: str, expected: str) -> None:
    assert expected in _errors({"resident_weight": raw})["resident_weight"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("-1", "-1 is out of range: 0 to 1000000"),
        ("2.5", "'2.5' is not a whole number"),
        ("five", "'five' is not a whole number"),
        ("10000000", "10000000 is out of range"),
    ],
)
def test_a_bad_overflow_threshold_is_refused(raw: str, expected: str) -> None:
    assert expected in _errors({"overflow_threshold": raw})["overflow_threshold"]


def test_an_unknown_capability_is_refused_listing_the_known_ones() -> None:
    message = _errors({"required_capabilities": "emotive, telepathy"})["required_capabilities"]
    assert message == "unknown capability 'telepathy' (known: emotive, streaming, zero_shot)"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("piper", "line 1 'piper' is not adapter_type=priority"),
        ("=1", "line 1 '=1' is not adapter_type=priority"),
        ("piper=0", "line 1: priority 0 is out of range: 1 to 1000"),
        ("piper=-2", "line 1: priority -2 is out of range"),
        ("piper=first", "line 1: priority 'first' is not a whole number"),
        ("piper=1\npiper=2", "line 2: 'piper' is listed twice"),
        ("a b=1", "line 1 'a b=1' is not adapter_type=priority"),
    ],
)
def test_a_bad_worker_priority_line_is_refused(raw: str, expected: str) -> None:
    assert expected in _errors({"worker_priority": raw})["worker_priority"]


def test_a_bad_yes_no_value_is_refused() -> None:
    assert (
        "not a yes/no value"
        in _errors({"prefer_resident_models": "maybe"})["prefer_resident_models"]
    )


def test_every_bad_field_is_reported_at_once() -> None:
    errors = _errors(
        {
            "strategy": "x",
            "resident_weight": "-1",
            "overflow_threshold": "y",
            "worker_priority": "z",
        }
    )
    assert set(errors) == {"strategy", "resident_weight", "overflow_threshold", "worker_priority"}


def test_the_error_names_each_field() -> None:
    error = RoutingFormError(
        [FieldError("strategy", "bad"), FieldError("resident_weight", "worse")]
    )
    assert str(error) == "strategy: bad; resident_weight: worse"


def test_known_capabilities_are_the_base_names_and_what_live_workers_advertise() -> None:
    names = known_capabilities([_worker("a", extra=("telepathy",))])
    assert {"streaming", "zero_shot", "telepathy"} <= names


# -- the what-if ------------------------------------------------------------------------------

# a: piper, m1 resident, load 2.  b: cosy, m1 not resident, idle.  c: piper, m1 resident,
# queue 1 plus 2 in flight (load 3), the only "emotive" one.
WORKERS = {
    w.name: w
    for w in (
        _worker("a", queue=2),
        _worker("b", adapter="cosy", queue=0, resident=()),
        _worker("c", queue=1, extra=("emotive",)),
    )
}
INFLIGHT = {"c": 2}
SETTINGS = RoutingSettings(
    strategy=Strategy.PRIORITY,
    prefer_resident_models=True,
    resident_weight=0.8,
    worker_priority=(PriorityRule("piper", 1), PriorityRule("cosy", 2)),
    overflow_threshold=1,
)
M1 = SessionRequest(model_id="m1", language="en")


def _picks(
    request: SessionRequest,
    settings: RoutingSettings = SETTINGS,
    *,
    drained: frozenset[str] = frozenset(),
    inflight: Mapping[str, int] = INFLIGHT,
) -> dict[Strategy, StrategyPick]:
    result = what_if(request, WORKERS, settings=settings, drained=drained, inflight=inflight)
    return {p.strategy: p for p in result.picks}


def test_each_of_the_five_strategies_gets_its_own_pick() -> None:
    picks = _picks(M1)
    assert [s for s in picks] == list(Strategy)
    # Balancing over the resident workers (prefer_resident_models): a (2) before c (1 + 2).
    assert picks[Strategy.LEAST_LOADED].worker == "a"
    assert picks[Strategy.CAPABILITY_AWARE].worker == "a"
    # a has 2 more jobs than idle b: more than 0.8 x max(0, 1), so b loads the model.
    assert (picks[Strategy.PREFER_RESIDENT].worker, picks[Strategy.PREFER_RESIDENT].needs_load) == (
        "b",
        True,
    )
    # Every piper worker is above overflow_threshold 1: the cosy tier takes it.
    assert picks[Strategy.PRIORITY].worker == "b"
    assert picks[Strategy.PRIORITY].needs_load is True
    # Round robin: a at the counter's 0, then the others as it advances.
    assert picks[Strategy.ROUND_ROBIN].worker == "a"
    assert picks[Strategy.ROUND_ROBIN].rotates_to == ("b", "c")
    assert picks[Strategy.LEAST_LOADED].rotates_to == ()
    assert [p.active for p in picks.values()] == [s is Strategy.PRIORITY for s in Strategy]


def test_the_active_parameters_shape_every_strategy() -> None:
    plain = replace(SETTINGS, prefer_resident_models=False, required_capabilities=("emotive",))
    picks = _picks(M1, plain)
    # Only c has "emotive", whatever its load.
    assert {p.worker for p in picks.values()} == {"c"}


def test_in_flight_sessions_count_as_load() -> None:
    request = SessionRequest(model_id=None, language="en")
    settings = replace(SETTINGS, prefer_resident_models=False)
    assert _picks(request, settings, inflight={})[Strategy.LEAST_LOADED].worker == "b"
    busy_b = _picks(request, settings, inflight={"b": 5})
    assert busy_b[Strategy.LEAST_LOADED].worker == "c"  # c: 1, a: 2, b: 0 + 5


def test_an_unknown_model_is_no_worker_with_the_reason() -> None:
    picks = _picks(SessionRequest(model_id="nope", language="en"))
    for pick in picks.values():
        assert pick.worker is None
        assert pick.reason == "model 'nope' is on no live worker (models offered: m1, m2)"


def test_an_unknown_language_is_no_worker_with_the_reason() -> None:
    picks = _picks(SessionRequest(model_id=None, language="fr"))
    assert {p.reason for p in picks.values()} == {
        "no worker for language='fr' (languages offered: en)"
    }


def test_a_fully_drained_fleet_says_so() -> None:
    picks = _picks(M1, drained=frozenset(WORKERS))
    reason = picks[Strategy.ROUND_ROBIN].reason
    assert reason is not None and reason.startswith("all 3 matching workers are drained")


def test_a_drained_worker_is_never_picked_and_is_marked() -> None:
    result = what_if(
        M1, WORKERS, settings=SETTINGS, drained=frozenset({"a", "b"}), inflight=INFLIGHT
    )
    assert {p.worker for p in result.picks} == {"c"}
    lines = {w.name: w for w in result.workers}
    assert (lines["a"].drained, lines["a"].eligible) == (True, False)
    assert (lines["c"].load, lines["c"].inflight, lines["c"].resident) == (3, 2, True)
    assert lines["b"].resident is False


def test_no_workers_at_all_is_no_worker() -> None:
    result = what_if(M1, {}, settings=SETTINGS, drained=frozenset(), inflight={})
    assert all(p.worker is None and "no live workers" in (p.reason or "") for p in result.picks)
    assert result.workers == ()


def test_in_flight_counts_are_summed_over_every_orchestrator() -> None:
    records = [
        OrchestratorRecord("o1", "", 0.0, 0.0, inflight={"a": 1, "b": 2}),
        OrchestratorRecord("o2", "", 0.0, 0.0, inflight={"b": 3}),
        OrchestratorRecord("o3", "", 0.0, 0.0),
    ]
    assert summed_inflight(records) == {"a": 1, "b": 5}
