"""The filters applied before any strategy, each failing with a reason a person can act on.

Order: language, streaming, capabilities (the settings' required ones plus the
request's), model (resident or in the worker's catalog), then drained. Drained comes
last so that "all N matching workers are drained" is reported only when the drained
workers are the ones that would otherwise have served the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from duplex.registry.records import RoutingSettings, WorkerRecord
from duplex.routing.request import NoWorkerAvailable, NoWorkerCause, SessionRequest


def offers_model(worker: WorkerRecord, model_id: str | None) -> bool:
    """Whether the worker can serve the model (None: its default model, always)."""
    return (
        model_id is None
        or model_id in worker.resident_models
        or model_id in worker.available_models
    )


def required_capabilities(request: SessionRequest, settings: RoutingSettings) -> frozenset[str]:
    return frozenset(settings.required_capabilities) | frozenset(request.capabilities)


def passes_filters(
    worker: WorkerRecord,
    request: SessionRequest,
    *,
    settings: RoutingSettings,
    drained: frozenset[str],
) -> bool:
    """Whether one worker passes every filter (the predicate form of `eligible_workers`)."""
    caps = worker.capabilities
    return (
        worker.name not in drained
        and caps.streaming
        and request.language in caps.languages
        and required_capabilities(request, settings) <= caps.names()
        and offers_model(worker, request.model_id)
    )


def eligible_workers(
    request: SessionRequest,
    workers: Sequence[WorkerRecord],
    *,
    settings: RoutingSettings,
    drained: frozenset[str],
) -> list[WorkerRecord]:
    """The workers that may serve the request; raises NoWorkerAvailable if none may."""
    if not workers:
        raise NoWorkerAvailable(
            f"no live workers are registered (asked for {request.describe()})",
            NoWorkerCause.NO_WORKERS,
        )
    lang = request.language
    found = [w for w in workers if lang in w.capabilities.languages]
    if not found:
        offered = _listing(x for w in workers for x in w.capabilities.languages)
        raise NoWorkerAvailable(
            f"no worker for language={lang!r} (languages offered: {offered})",
            NoWorkerCause.LANGUAGE,
        )
    streaming = [w for w in found if w.capabilities.streaming]
    if not streaming:
        raise NoWorkerAvailable(
            f"no streaming worker for language={lang!r} ({len(found)} non-streaming)",
            NoWorkerCause.STREAMING,
        )
    found = _with_capabilities(request, settings, streaming)
    found = _with_model(request, workers, found)
    live = [w for w in found if w.name not in drained]
    if not live:
        raise NoWorkerAvailable(
            f"all {len(found)} matching workers are drained ({_listing(w.name for w in found)};"
            f" asked for {request.describe()})",
            NoWorkerCause.DRAINED,
        )
    return live


def _with_capabilities(
    request: SessionRequest, settings: RoutingSettings, workers: list[WorkerRecord]
) -> list[WorkerRecord]:
    needed = required_capabilities(request, settings)
    found = [w for w in workers if needed <= w.capabilities.names()]
    if not found:
        offered = _listing(x for w in workers for x in w.capabilities.names())
        raise NoWorkerAvailable(
            f"no streaming worker for language={request.language!r} has all of the capabilities"
            f" {', '.join(sorted(needed))} (they offer: {offered})",
            NoWorkerCause.CAPABILITY,
        )
    return found


def _with_model(
    request: SessionRequest, everyone: Sequence[WorkerRecord], workers: list[WorkerRecord]
) -> list[WorkerRecord]:
    model = request.model_id
    found = [w for w in workers if offers_model(w, model)]
    if found:
        return found
    if not any(offers_model(w, model) for w in everyone):
        offered = _listing(m for w in everyone for m in (*w.resident_models, *w.available_models))
        raise NoWorkerAvailable(
            f"model {model!r} is on no live worker (models offered: {offered})",
            NoWorkerCause.MODEL,
        )
    raise NoWorkerAvailable(
        f"model {model!r} is on no worker that also matches {request.describe()}",
        NoWorkerCause.MODEL,
    )


def _listing(names: Iterable[str]) -> str:
    unique = sorted(set(names))
    return ", ".join(unique) if unique else "none"
