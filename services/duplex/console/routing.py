"""The routing page: the strategy in force and its parameters, the form that changes them in
Redis (every orchestrator applies it to its next session), and the what-if view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from duplex.console.action_gate import Action, ActionFailed, Outcome, admit, count, is_htmx
from duplex.console.auth import require_reader
from duplex.console.routing_form import (
    FIELDS,
    FieldError,
    RoutingFormError,
    format_capabilities,
    format_priority,
    known_capabilities,
    parse_routing_form,
)
from duplex.console.routing_whatif import WhatIf, summed_inflight, what_if
from duplex.console.state import ConsoleState, state_of
from duplex.registry import keys
from duplex.registry.orchestrators import read_orchestrators
from duplex.registry.records import RegistryDecodeError, RoutingSettings, Strategy
from duplex.routing import SessionRequest

_REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)
_MAX_QUERY: Final = 128  # longest language, model id or capability list the what-if takes

STRATEGY_HELP: Final = {
    Strategy.LEAST_LOADED: "the worker with the least queued work (queue depth plus sessions"
    " in flight)",
    Strategy.PREFER_RESIDENT: "a worker with the model already loaded, unless it has more than"
    " resident_weight times the work of the best other worker",
    Strategy.ROUND_ROBIN: "each worker in turn, load ignored",
    Strategy.CAPABILITY_AWARE: "least loaded among the workers with every required capability",
    Strategy.PRIORITY: "the best worker_priority tier that has a worker at or under"
    " overflow_threshold, least loaded within it",
}


@dataclass(frozen=True)
class WhatIfQuery:
    """The what-if form as given (echoed back into the form)."""

    language: str = "en"
    model_id: str = ""
    capabilities: str = ""

    def request(self) -> SessionRequest:
        caps = tuple(dict.fromkeys(c.strip() for c in self.capabilities.split(",") if c.strip()))
        return SessionRequest(
            model_id=self.model_id or None, language=self.language, capabilities=caps
        )


def routing_routes() -> list[BaseRoute]:
    """The routing page, its form, the reset and the what-if."""
    return [
        Route("/routing", routing_page, methods=["GET"]),
        Route("/routing", set_routing, methods=["POST"]),
        Route("/routing/reset", reset_routing, methods=["POST"]),
        Route("/routing/whatif", routing_whatif, methods=["GET"]),
    ]


async def routing_page(request: Request) -> Response:
    await require_reader(request)
    state = state_of(request)
    return await _render(request, state, state.view.routing())


async def set_routing(request: Request) -> Response:
    state = state_of(request)
    await admit(request, state, Action.SET_ROUTING)
    form = await request.form()
    raw = {name: value for name in FIELDS if isinstance(value := form.get(name), str)}
    try:
        current = await _stored_routing(state)
        if not raw:
            raise RoutingFormError([FieldError("form", "no routing field was given")])
        settings = parse_routing_form(
            raw, current, capabilities=known_capabilities(state.view.workers().values())
        )
        await _write(state.admin.set_routing(settings))
    except RoutingFormError as exc:
        count(state, Action.SET_ROUTING, Outcome.BAD_REQUEST)
        errors = {e.field: e.message for e in exc.errors}
        return await _render(request, state, current, errors=errors, raw=raw, status=400)
    except ActionFailed as exc:
        count(state, Action.SET_ROUTING, exc.outcome)
        return await _render(
            request, state, state.view.routing(), failure=exc.message, status=exc.status
        )
    count(state, Action.SET_ROUTING, Outcome.OK)
    message = (
        f"Routing set: {settings.strategy.value}. Every orchestrator applies it to its next"
        " session."
    )
    return await _render(request, state, settings, override=True, message=message)


async def reset_routing(request: Request) -> Response:
    state = state_of(request)
    await admit(request, state, Action.RESET_ROUTING)
    try:
        await _write(state.admin.clear_routing())
    except ActionFailed as exc:
        count(state, Action.RESET_ROUTING, exc.outcome)
        return await _render(
            request, state, state.view.routing(), failure=exc.message, status=exc.status
        )
    count(state, Action.RESET_ROUTING, Outcome.OK)
    message = "Override removed: each orchestrator routes by its own configuration file again."
    return await _render(request, state, state.view.routing(), override=False, message=message)


async def routing_whatif(request: Request) -> Response:
    await require_reader(request)
    state = state_of(request)
    params = request.query_params
    query = WhatIfQuery(
        language=params.get("language", "en").strip() or "en",
        model_id=params.get("model_id", "").strip(),
        capabilities=params.get("capabilities", "").strip(),
    )
    too_long = [
        name
        for name, value in vars(query).items()
        if len(value) > _MAX_QUERY  # never reflected back at any length
    ]
    if too_long:
        return state.templates.TemplateResponse(
            request,
            "routing_whatif.html",
            {
                "whatif_error": f"{', '.join(too_long)}: at most {_MAX_QUERY} characters",
                **await _whatif_context(state, WhatIfQuery(), state.view.routing()),
            },
            status_code=400,
        )
    context = await _whatif_context(state, query, state.view.routing())
    if is_htmx(request):
        return state.templates.TemplateResponse(request, "routing_whatif.html", context)
    return await _render(request, state, state.view.routing(), whatif_query=query)


async def _write(operation: Any) -> None:
    try:
        await operation
    except _REDIS_ERRORS as exc:
        raise ActionFailed(
            503,
            Outcome.REDIS_ERROR,
            f"Redis could not be written ({type(exc).__name__}); nothing was changed",
        ) from None


async def _stored_routing(state: ConsoleState) -> RoutingSettings:
    """The routing a partial form applies to: read from Redis now, not from the view, which
    may not yet show a change made a moment ago (a toggle, then the parameters form)."""
    try:
        stored = await state.redis.hgetall(keys.ROUTING)
    except _REDIS_ERRORS as exc:
        raise ActionFailed(
            503,
            Outcome.REDIS_ERROR,
            f"Redis could not be read ({type(exc).__name__}); nothing was changed",
        ) from None
    fields = {str(k): str(v) for k, v in stored.items()}
    if not fields:
        return state.view.routing()
    try:
        return RoutingSettings.decode(fields, state.view.routing())
    except RegistryDecodeError:
        return state.view.routing()  # the view logs it; a full write replaces it


async def _override_in_redis(state: ConsoleState) -> bool | None:
    """Whether `routing:strategy` exists; None when Redis cannot say."""
    try:
        return bool(await state.redis.exists(keys.ROUTING))
    except _REDIS_ERRORS:
        return None


async def _whatif_context(
    state: ConsoleState, query: WhatIfQuery, settings: RoutingSettings
) -> dict[str, Any]:
    workers = state.view.workers()
    inflight_error = None
    try:
        records = await read_orchestrators(state.redis)
    except _REDIS_ERRORS as exc:
        records, inflight_error = [], f"in-flight counts unavailable: {type(exc).__name__}"
    result: WhatIf = what_if(
        query.request(),
        workers,
        settings=settings,
        drained=state.view.drained(),
        inflight=summed_inflight(records),
        orchestrators=len(records),
    )
    models = sorted(
        {m for w in workers.values() for m in (*w.available_models, *w.resident_models)}
    )
    languages = sorted({x for w in workers.values() for x in w.capabilities.languages})
    return {
        "whatif": result,
        "whatif_query": query,
        "whatif_models": models,
        "whatif_languages": languages,
        "inflight_error": inflight_error,
    }


def _form_values(settings: RoutingSettings, raw: Mapping[str, str]) -> dict[str, str]:
    """What the form's inputs show: the submitted text after an error, else the settings."""
    values = {
        "strategy": settings.strategy.value,
        "prefer_resident_models": "true" if settings.prefer_resident_models else "false",
        "resident_weight": f"{settings.resident_weight:g}",
        "overflow_threshold": str(settings.overflow_threshold),
        "required_capabilities": format_capabilities(settings.required_capabilities),
        "worker_priority": format_priority(settings.worker_priority),
    }
    values.update(raw)
    return values


async def _render(
    request: Request,
    state: ConsoleState,
    settings: RoutingSettings,
    *,
    override: bool | None = None,
    message: str | None = None,
    failure: str | None = None,
    errors: Mapping[str, str] | None = None,
    raw: Mapping[str, str] | None = None,
    whatif_query: WhatIfQuery | None = None,
    status: int = 200,
) -> Response:
    # After a change, the what-if form (hx-trigger "routing-changed from:body") asks again.
    headers = {"HX-Trigger": "routing-changed"} if message is not None else None
    if override is None:
        override = await _override_in_redis(state)
    context: dict[str, Any] = {
        "settings": settings,
        "override": override,
        "strategies": list(Strategy),
        "strategy_help": STRATEGY_HELP,
        "values": _form_values(settings, raw or {}),
        "errors": dict(errors or {}),
        "message": message,
        "failure": failure,
        "capabilities_known": sorted(known_capabilities(state.view.workers().values())),
    }
    if is_htmx(request):
        return state.templates.TemplateResponse(
            request, "routing_panel.html", context, status_code=status, headers=headers
        )
    context.update(await _whatif_context(state, whatif_query or WhatIfQuery(), settings))
    return state.templates.TemplateResponse(request, "routing.html", context, status_code=status)
