"""Actions on one worker: drain / undrain (Redis), load / unload a model (the worker's gRPC
LoadModel / UnloadModel) and "speak on this worker" (one sentence synthesized by that worker
alone, returned as a WAV for the page to play).

Every action needs the admin (`require_admin_action`), names a live worker, and is counted
in `actions_total{action,outcome}`. Errors at this edge: a bad form value is 400, an unknown
worker or model 404, a failed worker call 502 (504 when it ran out of time), Redis 503; in
each case nothing was changed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from redis.exceptions import RedisError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from duplex.audio.frames import PcmFrame
from duplex.audio.wav import encode_wav
from duplex.console.action_gate import Action, ActionFailed, Outcome, admit, count, is_htmx
from duplex.console.state import ConsoleState, state_of
from duplex.registry.records import WorkerRecord
from duplex.workerclient import UnknownModelError, WorkerError, WorkerUtteranceEnd

SPEAK_MAX_CHARS: Final = 500
SPEAK_SAMPLE_RATE: Final = 24000  # a browser plays it as is; half the bytes of 48 kHz
SPEAK_OPEN_TIMEOUT_S: Final = 10.0
# Synthesis with lead 0 runs as fast as the model goes; 500 characters of the slowest voice
# here (Kokoro, RTF ~0.2) take well under this.
SPEAK_DEADLINE_S: Final = 60.0
LOAD_TIMEOUT_S: Final = 120.0  # a large model can take a while to become resident
_REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)
_T = TypeVar("_T")

# What a handler does once the request is admitted: a message for the page, or a response.
_Handler = Callable[[ConsoleState, str, FormData], Awaitable[str | Response]]


def action_routes() -> list[BaseRoute]:
    """POST /workers/{name}/{drain,undrain,load,unload,speak}."""
    return [
        Route("/workers/{name}/drain", _route(Action.DRAIN, _drain), methods=["POST"]),
        Route("/workers/{name}/undrain", _route(Action.UNDRAIN, _undrain), methods=["POST"]),
        Route("/workers/{name}/load", _route(Action.LOAD, _load), methods=["POST"]),
        Route("/workers/{name}/unload", _route(Action.UNLOAD, _unload), methods=["POST"]),
        Route("/workers/{name}/speak", _route(Action.SPEAK, _speak), methods=["POST"]),
    ]


def _route(action: Action, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = state_of(request)
        await admit(request, state, action)
        name = str(request.path_params["name"])
        try:
            form = await request.form()
            result = await handler(state, name, form)
        except ActionFailed as exc:
            count(state, action, exc.outcome)
            return _result(request, state, action, name, exc.message, ok=False, status=exc.status)
        count(state, action, Outcome.OK)
        if isinstance(result, Response):
            return result
        return _result(request, state, action, name, result, ok=True, status=200)

    endpoint.__name__ = f"worker_{action.value}"
    return endpoint


def _result(
    request: Request,
    state: ConsoleState,
    action: Action,
    worker: str,
    message: str,
    *,
    ok: bool,
    status: int,
) -> Response:
    template = "action_result.html" if is_htmx(request) else "action_page.html"
    context = {"action": action.value, "worker": worker, "message": message, "ok": ok}
    return state.templates.TemplateResponse(request, template, context, status_code=status)


# -- the actions ------------------------------------------------------------------------------


async def _drain(state: ConsoleState, name: str, form: FormData) -> str:
    _live_worker(state, name)
    await _redis(state.admin.drain(name))
    return f"{name} is drained: it keeps its sessions and gets no new ones."


async def _undrain(state: ConsoleState, name: str, form: FormData) -> str:
    # A drained name whose worker has gone may still be cleared (a stale flag would bench the
    # worker again the moment it returns).
    if name not in state.view.drained():
        _live_worker(state, name)
    await _redis(state.admin.undrain(name))
    return f"{name} takes new sessions again."


async def _load(state: ConsoleState, name: str, form: FormData) -> str:
    worker = _live_worker(state, name)
    model = _model_of(worker, _field(form, "model_id"))
    client = state.clients.get(worker.target)
    result = await _call(worker, client.load_model(model, timeout_s=LOAD_TIMEOUT_S))
    if result.loaded_now:
        return f"{model} loaded on {name} in {result.load_ms:.0f} ms."
    return f"{model} was already resident on {name}."


async def _unload(state: ConsoleState, name: str, form: FormData) -> str:
    worker = _live_worker(state, name)
    model = _model_of(worker, _field(form, "model_id"))
    client = state.clients.get(worker.target)
    await _call(worker, client.unload_model(model))
    was = "" if model in worker.resident_models else " (it was not resident)"
    return f"{model} unloaded from {name}{was}."


async def _speak(state: ConsoleState, name: str, form: FormData) -> Response:
    worker = _live_worker(state, name)
    text = _field(form, "text").strip()
    if not text:
        raise ActionFailed(400, Outcome.BAD_REQUEST, "type a sentence to speak")
    if len(text) > SPEAK_MAX_CHARS:
        raise ActionFailed(
            400,
            Outcome.BAD_REQUEST,
            f"the text is {len(text)} characters long: at most {SPEAK_MAX_CHARS}",
        )
    requested = _field(form, "model_id").strip()
    model = _model_of(worker, requested) if requested else None
    audio, model_id = await _call(worker, _synthesize(state, worker, model, text))
    return Response(
        audio,
        media_type="audio/wav",
        headers={"Cache-Control": "no-store", "X-Worker": name, "X-Model-Id": model_id},
    )


async def _synthesize(
    state: ConsoleState, worker: WorkerRecord, model_id: str | None, text: str
) -> tuple[bytes, str]:
    """One utterance from this worker alone: the WAV and the model that spoke it."""
    client = state.clients.get(worker.target)
    language = worker.capabilities.languages[0] if worker.capabilities.languages else "en"
    stream = await client.open_stream(
        f"console-speak-{uuid.uuid4().hex}",
        model_id,
        SPEAK_SAMPLE_RATE,
        language,
        lead_ms=0,
        timeout_s=SPEAK_OPEN_TIMEOUT_S,
    )
    pcm: list[bytes] = []
    try:
        await stream.send_text(text, True)
        try:
            async with asyncio.timeout(SPEAK_DEADLINE_S):
                while (event := await stream.next_event(None)) is not None:
                    if isinstance(event, PcmFrame):
                        pcm.append(event.pcm)
                    elif isinstance(event, WorkerUtteranceEnd):
                        break
        except TimeoutError:
            raise ActionFailed(
                504,
                Outcome.WORKER_ERROR,
                f"{worker.name} did not finish the sentence within {SPEAK_DEADLINE_S:g} s",
            ) from None
    finally:
        await stream.close()
    if not pcm:
        raise ActionFailed(502, Outcome.WORKER_ERROR, f"{worker.name} returned no audio")
    return encode_wav(b"".join(pcm), stream.opened.sample_rate), stream.opened.model_id


# -- checks and translations --------------------------------------------------------------------


def _live_worker(state: ConsoleState, name: str) -> WorkerRecord:
    worker = state.view.workers().get(name)
    if worker is None:
        raise ActionFailed(404, Outcome.NOT_FOUND, f"no live worker named {name!r}")
    return worker


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _model_of(worker: WorkerRecord, model_id: str) -> str:
    model = model_id.strip()
    models = list(dict.fromkeys((*worker.available_models, *worker.resident_models)))
    if not model:
        raise ActionFailed(
            400, Outcome.BAD_REQUEST, f"choose a model (on {worker.name}: {', '.join(models)})"
        )
    if model not in models:
        raise ActionFailed(
            404,
            Outcome.NOT_FOUND,
            f"{worker.name} has no model {model!r} (its models: {', '.join(models) or 'none'})",
        )
    return model


async def _call(worker: WorkerRecord, call: Awaitable[_T]) -> _T:
    """A worker call, its errors as the page's: unknown model 404, any other failure 502."""
    try:
        return await call
    except UnknownModelError as exc:
        raise ActionFailed(404, Outcome.NOT_FOUND, f"{worker.name}: {exc.message}") from None
    except WorkerError as exc:
        raise ActionFailed(502, Outcome.WORKER_ERROR, f"{worker.name}: {exc.message}") from None


async def _redis(operation: Awaitable[None]) -> None:
    try:
        await operation
    except _REDIS_ERRORS as exc:
        raise ActionFailed(
            503,
            Outcome.REDIS_ERROR,
            f"Redis could not be written ({type(exc).__name__}); nothing was changed",
        ) from None
