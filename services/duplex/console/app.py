"""The console's ASGI app and an in-process uvicorn server for it.

One port serves the pages (Workers, GPUs, Routing, Sessions), their HTMX fragments, the
operator's actions, the sign-in, `/static` (htmx, CSS), `/health` and `/metrics`. Everything
stateful (the registry view, a Redis client, the registry admin, worker clients, the GPU
history task) is created by the lifespan and closed by it; nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from duplex.asgiserver import InProcessServer
from duplex.console.actions import action_routes
from duplex.console.auth import SessionCookieMiddleware, auth_routes, csrf_token, signed_in
from duplex.console.config import ConsoleConfig, check_bind
from duplex.console.history import GpuHistory
from duplex.console.metrics import CONTENT_TYPE, ConsoleMetrics
from duplex.console.routing import routing_routes
from duplex.console.state import ConsoleState
from duplex.console.views import record_gpu_history, view_routes
from duplex.registry._connect import open_redis
from duplex.registry.admin import RegistryAdmin
from duplex.registry.records import RoutingSettings
from duplex.registry.view import RegistryView
from duplex.webassets import web_root
from duplex.workerclient import WorkerClients
from duplex.workerclient.credentials import WorkerSecurity

_LOG = logging.getLogger(__name__)

_SHUTDOWN_STEP_S = 5.0
_REDIS_TIMEOUT_S = 2.0


def console_templates(config: ConsoleConfig) -> Jinja2Templates:
    """The page templates (web/console/templates) with what every page needs: the globals
    `csrf_token(request)` and `signed_in(request)`, and `console` (links, refresh) and
    `loopback` in every context."""
    section = config.console

    def common(request: Request) -> dict[str, Any]:
        return {"console": section, "loopback": section.loopback}

    templates = Jinja2Templates(
        directory=web_root() / "console" / "templates", context_processors=[common]
    )
    templates.env.globals["csrf_token"] = csrf_token
    templates.env.globals["signed_in"] = signed_in
    return templates


def _with_session_secret(config: ConsoleConfig) -> ConsoleConfig:
    if config.console.session_secret:
        return config
    _LOG.warning(
        "no console.session_secret (CONSOLE_SESSION_SECRET): using a random one, so "
        "sign-ins end when the console restarts"
    )
    section = dataclasses.replace(config.console, session_secret=secrets.token_urlsafe(32))
    return dataclasses.replace(config, console=section)


def _extra_routes() -> list[BaseRoute]:
    """The routing page and the actions (console/routing.py, console/actions.py)."""
    return [*routing_routes(), *action_routes()]


async def _record_gpus(view: RegistryView, history: GpuHistory, interval_s: float) -> None:
    """Samples every GPU's utilization for the sparklines, whether or not a page is open."""
    while True:
        try:
            record_gpu_history(view.workers(), history)
        except Exception:  # a task boundary: a bad record must not end the history
            _LOG.exception("GPU history sampling failed")
        await asyncio.sleep(interval_s)


def build_console_app(config: ConsoleConfig) -> Starlette:
    """The Starlette app; its lifespan owns every resource of the console."""
    check_bind(config)
    config = _with_session_secret(config)
    templates = console_templates(config)
    metrics = ConsoleMetrics()  # per app, beside the lifespan: /metrics answers while starting

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        view = RegistryView(
            config.redis.url,
            RoutingSettings(),
            reconcile_s=config.redis.reconcile_interval_ms / 1000,
            stale_after_s=config.redis.worker_ttl_ms / 1000,
        )
        await view.start()
        client = open_redis(config.redis.url, timeout_s=_REDIS_TIMEOUT_S)
        admin = RegistryAdmin(config.redis.url, timeout_s=_REDIS_TIMEOUT_S)
        clients = WorkerClients(WorkerSecurity.from_env(os.environ))
        state = ConsoleState(
            config=config,
            view=view,
            redis=client,
            admin=admin,
            clients=clients,
            templates=templates,
            metrics=metrics,
        )
        history = asyncio.create_task(
            _record_gpus(view, state.gpu_history, config.console.refresh_ms / 1000),
            name="console-gpu-history",
        )
        app.state.console = state
        _LOG.info(
            "console ready",
            extra={"redis_ok": view.redis_ok(), "workers": len(view.workers())},
        )
        try:
            yield
        finally:
            app.state.console = None
            history.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await history
            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("worker clients", clients.close_all),
                ("registry admin", admin.close),
                ("redis client", client.aclose),
                ("registry view", view.stop),
            ]
            for step, stop in steps:
                deadline = asyncio.timeout(_SHUTDOWN_STEP_S)
                with contextlib.suppress(TimeoutError):
                    async with deadline:
                        await stop()
                if deadline.expired():
                    _LOG.error("shutdown step timed out; going on", extra={"step": step})
            _LOG.info("console stopped")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code < 400:  # a redirect raised by require_reader
            return Response(status_code=exc.status_code, headers=headers)
        if "hx-request" in request.headers:
            # HTMX swaps 4xx/5xx bodies in (base.html's htmx-config): a message, no page.
            body = f'<p class="flash error" role="alert">{html.escape(exc.detail)}</p>'
            return HTMLResponse(body, exc.status_code, headers=headers)
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": exc.status_code, "message": exc.detail},
            status_code=exc.status_code,
            headers=headers,
        )

    static = StaticFiles(directory=web_root() / "console" / "static")
    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Mount("/static", app=static, name="static"),
            *auth_routes(),
            *view_routes(),
            *_extra_routes(),
        ],
        middleware=[Middleware(SessionCookieMiddleware, secret_key=config.console.session_secret)],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


class ConsoleServer:
    """Runs the console under uvicorn in the current event loop (the CLI and the tests use
    it). `port` 0 picks a free port; `port` tells the bound one after `start()`."""

    def __init__(
        self, config: ConsoleConfig, *, host: str | None = None, port: int | None = None
    ) -> None:
        section = config.console
        if host is not None or port is not None:
            section = dataclasses.replace(
                section,
                host=section.host if host is None else host,
                port=section.port if port is None else port,
            )
            config = dataclasses.replace(config, console=section)
        self.config = config
        self.app = build_console_app(config)
        self._server = InProcessServer(
            self.app, host=section.host, port=section.port, name="console"
        )

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def url(self) -> str:
        """ "http://host:port", with 127.0.0.1 for a wildcard host."""
        return f"http://{self._server.local_host}:{self.port}"

    async def start(self, timeout_s: float = 15.0) -> None:
        """Start serving; returns once the port is bound, raises ServerStartError if not."""
        await self._server.start(timeout_s)
        _LOG.info("console listening", extra={"host": self.host, "port": self.port})

    async def wait(self) -> None:
        """Until the server stops (after `request_stop()` or `stop()`)."""
        await self._server.wait()

    def request_stop(self) -> None:
        """Ask uvicorn to shut down gracefully (safe from a signal handler callback)."""
        self._server.request_stop()

    async def stop(self, timeout_s: float = 30.0) -> None:
        await self._server.stop(timeout_s)

    async def __aenter__(self) -> ConsoleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
