"""The filters before any strategy, and the reasons they give."""

from __future__ import annotations

import pytest
from duplex.registry.records import Capabilities, RoutingSettings, WorkerMetrics, WorkerRecord
from duplex.routing import (
    NoWorkerAvailable,
    NoWorkerCause,
    SessionRequest,
    eligible_workers,
    passes_filters,
)

SETTINGS = RoutingSettings()


def _worker(
    name: str,
    *,
    languages: tuple[str, ...] = ("en",),
    streaming: bool = True,
    extra: tuple[str, ...] = (),
    resident: tuple[str, ...] = ("piper-en",),
    available: tuple[str, ...] = (),
) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr=f"grpc://127.0.0.1:{7000 + len(name)}",
        adapter_type="piper",
        capabilities=Capabilities(streaming=streaming, languages=languages, extra=extra),
        resident_models=resident,
        available_models=available,
        metrics=WorkerMetrics(),
        last_heartbeat=0.0,
    )


def _reason(
    request: SessionRequest,
    workers: list[WorkerRecord],
    *,
    settings: RoutingSettings = SETTINGS,
    drained: frozenset[str] = frozenset(),
) -> NoWorkerAvailable:
    with pytest.raises(NoWorkerAvailable) as info:
        eligible_workers(request, workers, settings=settings, drained=drained)
    return info.value


def test_no_workers_at_all() -> None:
    """An empty registry is reported as such, with the request."""
    exc = _reason(SessionRequest(None, "en"), [])
    assert exc.cause is NoWorkerCause.NO_WORKERS
    assert exc.reason == "no live workers are registered (asked for language='en')"


def test_unknown_language_lists_the_languages_offered() -> None:
    """A language nobody speaks names the languages that are available."""
    workers = [_worker("a", languages=("en",)), _worker("b", languages=("ja", "en"))]
    exc = _reason(SessionRequest(None, "fr"), workers)
    assert exc.cause is NoWorkerCause.LANGUAGE
    assert exc.reason == "no worker for language='fr' (languages offered: en, ja)"


def test_non_streaming_workers_are_excluded() -> None:
    """A worker that cannot stream never serves a session."""
    exc = _reason(SessionRequest(None, "en"), [_worker("a", streaming=False)])
    assert exc.cause is NoWorkerCause.STREAMING
    assert exc.reason == "no streaming worker for language='en' (1 non-streaming)"
    ok = [_worker("a", streaming=False), _worker("b")]
    assert [
        w.name
        for w in eligible_workers(
            SessionRequest(None, "en"), ok, settings=SETTINGS, drained=frozenset()
        )
    ] == ["b"]


def test_requested_capabilities_must_all_be_offered() -> None:
    """The session's capabilities filter; the reason names what is needed and offered."""
    workers = [_worker("a", extra=("ssml",)), _worker("b", extra=("zero_shot",))]
    request = SessionRequest(None, "en", ("zero_shot", "ssml"))
    exc = _reason(request, workers)
    assert exc.cause is NoWorkerCause.CAPABILITY
    assert exc.reason == (
        "no streaming worker for language='en' has all of the capabilities ssml, zero_shot"
        " (they offer: ssml, streaming, zero_shot)"
    )


def test_settings_required_capabilities_filter_too() -> None:
    """required_capabilities from the routing settings apply to every request."""
    workers = [_worker("a"), _worker("b", extra=("zero_shot",))]
    settings = RoutingSettings(required_capabilities=("zero_shot",))
    found = eligible_workers(
        SessionRequest(None, "en"), workers, settings=settings, drained=frozenset()
    )
    assert [w.name for w in found] == ["b"]


def test_model_on_no_live_worker() -> None:
    """A model no worker holds or can load is reported with the models on offer."""
    workers = [_worker("a", resident=("piper-en",), available=("piper-en", "tone"))]
    exc = _reason(SessionRequest("xtts", "en"), workers)
    assert exc.cause is NoWorkerCause.MODEL
    assert exc.reason == "model 'xtts' is on no live worker (models offered: piper-en, tone)"


def test_model_only_on_a_worker_for_another_language() -> None:
    """A model that exists, but not on a worker matching the rest of the request."""
    workers = [_worker("en1"), _worker("ja1", languages=("ja",), resident=("kokoro-ja",))]
    exc = _reason(SessionRequest("kokoro-ja", "en"), workers)
    assert exc.cause is NoWorkerCause.MODEL
    assert (
        exc.reason
        == "model 'kokoro-ja' is on no worker that also matches language='en', model 'kokoro-ja'"
    )


def test_model_in_the_catalog_is_eligible() -> None:
    """A worker that can load the model (available, not resident) passes."""
    workers = [_worker("a", resident=("piper-en",), available=("piper-en", "tone"))]
    found = eligible_workers(
        SessionRequest("tone", "en"), workers, settings=SETTINGS, drained=frozenset()
    )
    assert [w.name for w in found] == ["a"]


def test_no_model_means_any_worker() -> None:
    """model_id None asks for the worker's default model: every worker qualifies."""
    workers = [_worker("a", resident=()), _worker("b", resident=("x",))]
    found = eligible_workers(
        SessionRequest(None, "en"), workers, settings=SETTINGS, drained=frozenset()
    )
    assert [w.name for w in found] == ["a", "b"]


def test_all_matching_workers_drained() -> None:
    """Drained workers get no sessions; if that leaves none, the reason says so."""
    workers = [_worker("a"), _worker("b"), _worker("ja", languages=("ja",))]
    exc = _reason(SessionRequest(None, "en"), workers, drained=frozenset({"a", "b"}))
    assert exc.cause is NoWorkerCause.DRAINED
    assert exc.reason == "all 2 matching workers are drained (a, b; asked for language='en')"


def test_drained_worker_is_skipped_when_another_fits() -> None:
    """Draining one of two workers leaves the other."""
    workers = [_worker("a"), _worker("b")]
    found = eligible_workers(
        SessionRequest(None, "en"), workers, settings=SETTINGS, drained=frozenset({"a"})
    )
    assert [w.name for w in found] == ["b"]


def test_passes_filters_checks_each_filter() -> None:
    """The predicate form rejects each failing filter and accepts a fitting worker."""
    request = SessionRequest("m", "en", ("ssml",))
    good = _worker("a", extra=("ssml",), resident=("m",))
    nobody: frozenset[str] = frozenset()
    assert passes_filters(good, request, settings=SETTINGS, drained=nobody)
    assert not passes_filters(good, request, settings=SETTINGS, drained=frozenset({"a"}))
    assert not passes_filters(
        _worker("a", extra=("ssml",), streaming=False, resident=("m",)),
        request,
        settings=SETTINGS,
        drained=nobody,
    )
    assert not passes_filters(
        _worker("a", extra=("ssml",), languages=("ja",), resident=("m",)),
        request,
        settings=SETTINGS,
        drained=nobody,
    )
    assert not passes_filters(
        _worker("a", resident=("m",)), request, settings=SETTINGS, drained=nobody
    )
    assert not passes_filters(
        _worker("a", extra=("ssml",), resident=("n",)), request, settings=SETTINGS, drained=nobody
    )
