"""The browser demo's HTTP side: the page, its static files, and the live model list.

    routes = page_routes(web_root(), lambda: models_from_workers(view.workers(), view.drained()))

`GET /` answers `web/demo/index.html`, `/demo/...` the page's own files, and `GET /api/models`
the models the live registry offers, which the page's model picker shows. Everything is
served from this machine: the page loads nothing from anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from duplex.registry.records import WorkerRecord

ModelList = Callable[[], list[dict[str, object]]]
Authorize = Callable[[Request], bool]

# The page and its scripts change with every release and are small: browsers revalidate each
# time (a 304 when unchanged) instead of running yesterday's script against today's server.
_REVALIDATE = {"Cache-Control": "no-cache"}


class _RevalidatedFiles(StaticFiles):
    """StaticFiles whose answers carry `Cache-Control: no-cache` (ETags still apply)."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_REVALIDATE)
        return response


def page_routes(
    web_root: Path, list_models: ModelList, *, authorize: Authorize | None = None
) -> list[BaseRoute]:
    """Routes for `/`, `/demo/...` and `/api/models`.

    `list_models` is called on every request (the registry view is in memory, so it is cheap).
    `authorize`, when given, guards `/api/models` (the client API keys); the page and its
    static files are public, as they hold nothing but code.
    """
    demo = web_root / "demo"
    index = demo / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"the demo page is missing: {index}")

    async def page(request: Request) -> Response:
        return FileResponse(index, media_type="text/html", headers=_REVALIDATE)

    async def models(request: Request) -> Response:
        if authorize is not None and not authorize(request):
            return JSONResponse(
                {"error": "an API key is required: add ?key=... or Authorization: Bearer ..."},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return JSONResponse({"models": list_models()}, headers={"Cache-Control": "no-store"})

    return [
        Route("/", page, methods=["GET", "HEAD"]),
        Route("/api/models", models, methods=["GET"]),
        Mount("/demo", app=_RevalidatedFiles(directory=demo), name="demo"),
    ]


def models_from_workers(
    workers: Mapping[str, WorkerRecord], drained: Iterable[str] = ()
) -> list[dict[str, object]]:
    """The models that live, undrained workers offer, each with its language and workers.

    Sorted by model id; a model's `language` is the first language of the first worker (by
    name) that offers it, since a worker announces languages for all of its models.
    """
    skip = set(drained)
    offered: dict[str, list[WorkerRecord]] = {}
    for name in sorted(workers):
        record = workers[name]
        if name in skip:
            continue
        for model_id in record.available_models or record.resident_models:
            offered.setdefault(model_id, []).append(record)
    return [
        {
            "id": model_id,
            "language": next(
                (r.capabilities.languages[0] for r in records if r.capabilities.languages), ""
            ),
            "workers": [r.name for r in records],
        }
        for model_id, records in sorted(offered.items())
    ]
