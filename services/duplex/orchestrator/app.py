"""The orchestrator's ASGI app and an in-process uvicorn server for it.

One port serves the client APIs (the WebSocket at "/", where the deployment guide's client
connects; WebRTC signalling at `/offer` and `/whip`; the agent's channel at
`/sessions/{id}`), the mic page (`GET /`, `/demo/...`, `/api/models`) and operations
(`/health`, `/ready`, `/metrics`). With a certificate, the same app is also served over
HTTPS/WSS on `tls.port` (browsers give the microphone only to secure pages). Everything
stateful (the registry view, worker clients, router, metrics, sessions) is created by the
app's lifespan and closed by it; nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from duplex.asgiserver import InProcessServer
from duplex.orchestrator.auth import ApiKeyMiddleware
from duplex.orchestrator.config import OrchestratorConfig
from duplex.orchestrator.metrics import CONTENT_TYPE, OrchestratorMetrics
from duplex.orchestrator.openai_api import openai_routes
from duplex.orchestrator.pages import models_from_workers, page_routes
from duplex.orchestrator.router import Router
from duplex.orchestrator.session import SessionHub, SessionServices
from duplex.orchestrator.session.bargein import Transcriber
from duplex.orchestrator.tls import server_ssl_kwargs
from duplex.orchestrator.transports.signalling import Answer, SignallingError, signalling_routes
from duplex.orchestrator.transports.speech_stream import SpeechService
from duplex.orchestrator.transports.webrtc import WebRtcTransport
from duplex.orchestrator.transports.websocket import WebSocketTransport
from duplex.orchestrator.wyoming_server import WyomingServer
from duplex.registry.inflight import SharedInflight
from duplex.registry.orchestrators import (
    MAX_SESSIONS_PUBLISHED,
    OrchestratorPublisher,
    OrchestratorRecord,
)
from duplex.registry.view import RegistryView
from duplex.webassets import web_root
from duplex.workerclient import WorkerClients
from duplex.workerclient.credentials import WorkerSecurity

_LOG = logging.getLogger(__name__)

# uvicorn (the websockets library) closes with 1009 and no explanation above this size; below
# it our own check answers `Error MESSAGE_TOO_LARGE` first. Keep it a few times our limit.
_WS_MAX_SIZE_FACTOR = 4
# Each part of the shutdown gets this long, so one stuck part cannot hold the process.
_SHUTDOWN_STEP_S = 5.0


@dataclass(frozen=True)
class Runtime:
    """What the lifespan builds; the routes reach it through the app's holder."""

    config: OrchestratorConfig
    view: RegistryView
    clients: WorkerClients
    router: Router
    metrics: OrchestratorMetrics
    hub: SessionHub
    websocket: WebSocketTransport
    webrtc: WebRtcTransport | None
    # The compatible APIs (/v1/audio/speech, Wyoming): sessions of their own, unpaced hub.
    speech: SpeechService
    wyoming: WyomingServer | None = None


class _Holder:
    """Per-app slot for the runtime (set only while the lifespan runs)."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None

    def get(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("the orchestrator app is not running (lifespan not started)")
        return self.runtime


def _transcriber(config: OrchestratorConfig) -> Transcriber | None:
    if not config.asr.enabled:
        return None
    from duplex.audio.asr import WhisperTranscriber  # the optional asr extra

    transcriber: Transcriber = WhisperTranscriber(timeout_s=config.asr.timeout_s)
    return transcriber


def build_app(config: OrchestratorConfig) -> Starlette:
    """The Starlette app; its lifespan owns every resource of the orchestrator."""
    holder = _Holder()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        metrics = OrchestratorMetrics()
        transcriber = _transcriber(config)
        view = RegistryView(
            config.redis.url,
            config.routing,
            reconcile_s=config.redis.reconcile_interval_ms / 1000,
            stale_after_s=config.redis.worker_ttl_ms / 1000,
        )
        await view.start()
        # The worker API's token and/or mutual TLS, as the workers read them (the environment).
        clients = WorkerClients(WorkerSecurity.from_env(os.environ))
        orchestrator_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # Decisions shared with the fleet's other orchestrators (fair routing across them).
        shared = SharedInflight(
            config.redis.url, orchestrator_id, reconcile_s=config.redis.reconcile_interval_ms / 1000
        )
        shared.start()
        router = Router(view, config.routing, metrics=metrics, shared=shared)
        services = SessionServices(config=config, router=router, clients=clients, metrics=metrics)
        hub = SessionHub(services, transcriber=transcriber)
        webrtc = WebRtcTransport(hub, config, metrics) if config.transport.webrtc.enabled else None
        speech = SpeechService(services, view)
        wyoming = WyomingServer(speech, config.wyoming) if config.wyoming.enabled else None
        if wyoming is not None:
            await wyoming.start()
        runtime = Runtime(
            config, view, clients, router, metrics, hub, WebSocketTransport(hub), webrtc,
            speech, wyoming,
        )  # fmt: skip
        publisher = _publisher(
            config, runtime, lambda: getattr(app.state, "public_url", None), orchestrator_id
        )
        publisher.start()
        holder.runtime = app.state.runtime = runtime
        _LOG.info(
            "orchestrator ready to serve",
            extra={"redis_ok": view.redis_ok(), "workers": len(view.workers()),
                   "webrtc": webrtc is not None, "asr": transcriber is not None},
        )  # fmt: skip
        try:
            yield
        finally:
            holder.runtime = app.state.runtime = None
            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                *([("wyoming server", wyoming.stop)] if wyoming is not None else []),
                ("sessions", lambda: shutdown_sessions(runtime)),
                ("speech requests", speech.close),
                ("session publisher", publisher.stop),
                ("shared in-flight counts", shared.stop),
                ("worker clients", clients.close_all),
                ("registry view", view.stop),
            ]
            close = getattr(transcriber, "close", None)
            if close is not None:
                steps.append(("transcriber", close))
            for step, stop in steps:
                deadline = asyncio.timeout(_SHUTDOWN_STEP_S)
                # A part that swallows the cancellation returns instead of raising TimeoutError.
                with contextlib.suppress(TimeoutError):
                    async with deadline:
                        await stop()
                if deadline.expired():
                    _LOG.error("shutdown step timed out; going on", extra={"step": step})
            _LOG.info("orchestrator stopped")

    async def websocket_endpoint(websocket: WebSocket) -> None:
        await holder.get().websocket.handle(websocket)

    async def agent_endpoint(websocket: WebSocket) -> None:
        await holder.get().websocket.handle_agent(websocket)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        state = holder.get().router.readiness()
        body: dict[str, object] = {
            "redis": state.redis_ok,
            "workers": state.usable,
            "drained": state.drained,
        }
        if state.reason is not None:
            return JSONResponse({"status": "unready", "reason": state.reason, **body}, 503)
        return JSONResponse({"status": "ready", **body})

    async def metrics(request: Request) -> Response:
        return Response(holder.get().metrics.render(), media_type=CONTENT_TYPE)

    def list_models() -> list[dict[str, object]]:
        view = holder.get().view
        return models_from_workers(view.workers(), view.drained())

    webrtc_routes: list[BaseRoute] = []
    if config.transport.webrtc.enabled:

        def refused(exc: SignallingError) -> None:
            _LOG.info(
                "webrtc offer refused",
                extra={"status": exc.status, "reason": exc.reason, "why": exc.message},
            )
            if holder.runtime is not None:
                holder.runtime.metrics.webrtc_signalling_errors_total.labels(
                    reason=exc.reason
                ).inc()

        webrtc_routes = signalling_routes(_LiveAnswerer(holder), refused)

    return Starlette(
        routes=[
            WebSocketRoute("/", websocket_endpoint),
            WebSocketRoute("/sessions/{session_id}", agent_endpoint),
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *webrtc_routes,
            *openai_routes(lambda: holder.get().speech),
            *page_routes(web_root(), list_models),
        ],
        middleware=[Middleware(ApiKeyMiddleware, config=config.auth)],
        lifespan=lifespan,
    )


def _publisher(
    config: OrchestratorConfig,
    runtime: Runtime,
    bound_url: Callable[[], str | None],
    orchestrator_id: str,
) -> OrchestratorPublisher:
    """Publishes this process's in-flight counts and sessions for the console."""
    ws = config.transport.websocket
    host = socket.gethostname() if ws.host in ("0.0.0.0", "::", "") else ws.host
    url = f"http://{host}:{ws.port}"
    started_at = time.time()
    interval_s = config.redis.publish_interval_ms / 1000

    def snapshot() -> OrchestratorRecord:
        sessions = sorted(
            runtime.hub.summaries() + runtime.speech.summaries(), key=lambda s: s.started_at
        )
        return OrchestratorRecord(
            id=orchestrator_id,
            url=bound_url() or url,
            started_at=started_at,
            last_heartbeat=time.time(),
            inflight=dict(runtime.router.inflight()),
            sessions=tuple(sessions[:MAX_SESSIONS_PUBLISHED]),
            sessions_total=len(sessions),
        )

    return OrchestratorPublisher(
        config.redis.url, orchestrator_id, snapshot, interval_s=interval_s, ttl_s=interval_s * 3
    )


class _LiveAnswerer:
    """The running WebRTC transport, reached through the app's holder (routes are declared
    before the lifespan builds the transport)."""

    def __init__(self, holder: _Holder) -> None:
        self._holder = holder

    def _transport(self) -> WebRtcTransport:
        transport = self._holder.get().webrtc
        if transport is None:
            raise SignallingError(404, "webrtc_off", "WebRTC is off on this orchestrator")
        return transport

    async def answer(self, offer_sdp: str) -> Answer:
        return await self._transport().answer(offer_sdp)

    async def hang_up(self, peer_id: str) -> bool:
        return await self._transport().hang_up(peer_id)


async def shutdown_sessions(runtime: Runtime, reason: str = "shutdown") -> None:
    """End every live session of every transport with `SessionEnded {reason}`."""
    await runtime.hub.close_all(reason)
    await runtime.websocket.wait_closed()
    if runtime.webrtc is not None:
        await runtime.webrtc.close_all(reason)


class OrchestratorServer:
    """Runs the app under uvicorn in the current event loop (the CLI and tests use it), and
    over HTTPS/WSS beside it when the config has a certificate (the same app and runtime, so
    no second lifespan). `port` 0 picks a free port; `port` tells the bound one after
    `start()`.
    """

    def __init__(
        self,
        config: OrchestratorConfig,
        *,
        host: str | None = None,
        port: int | None = None,
        tls_port: int | None = None,
    ) -> None:
        ws = config.transport.websocket
        self.config = config
        self.app = build_app(config)
        common: dict[str, Any] = {
            "host": ws.host if host is None else host,
            "ws_max_size": ws.max_message_bytes * _WS_MAX_SIZE_FACTOR,
            # PCM barely compresses, and permessage-deflate on every 20 ms frame was the
            # largest single cost of a session's output (most of the WebSocket send time).
            "ws_per_message_deflate": False,
            # Named, not "auto": the WebSocket sink writes audio frames straight to this
            # implementation's transport (transports/ws_direct.py), ASGI for anything else.
            "ws": "websockets-sansio",
            "before_shutdown": self._goodbye,
        }
        self._plain = InProcessServer(
            self.app, port=ws.port if port is None else port, name="orchestrator", **common
        )
        self._tls: InProcessServer | None = None
        if config.tls.cert_file:
            ssl: dict[str, Any] = dict(
                server_ssl_kwargs(Path(config.tls.cert_file), Path(config.tls.key_file))
            )
            self._tls = InProcessServer(
                self.app,
                port=config.tls.port if tls_port is None else tls_port,
                lifespan="off",
                name="orchestrator-tls",
                **common,
                **ssl,
            )

    async def _goodbye(self) -> None:
        runtime: Runtime | None = getattr(self.app.state, "runtime", None)
        if runtime is not None:
            # uvicorn would close each WebSocket with 1012 and no message; end them first.
            await shutdown_sessions(runtime)

    @property
    def tls_port(self) -> int | None:
        """The HTTPS/WSS port once started, or None without a certificate."""
        return self._tls.port if self._tls is not None and self._tls.started else None

    @property
    def port(self) -> int:
        return self._plain.port

    @property
    def host(self) -> str:
        return self._plain.host

    @property
    def url(self) -> str:
        """The WebSocket URL ("ws://host:port"), with 127.0.0.1 for a wildcard host."""
        return f"ws://{self._plain.local_host}:{self.port}"

    @property
    def http_url(self) -> str:
        return "http" + self.url.removeprefix("ws")

    async def start(self, timeout_s: float = 15.0) -> None:
        """Start serving; returns once the ports are bound, raises ServerStartError if not."""
        await self._plain.start(timeout_s)
        if self._tls is not None:
            try:
                await self._tls.start(timeout_s)
            except BaseException:
                await self._plain.stop()
                raise
        host = self.host if self.host not in ("0.0.0.0", "::", "") else socket.gethostname()
        self.app.state.public_url = f"http://{host}:{self.port}"  # the bound port, for the console
        _LOG.info(
            "orchestrator listening",
            extra={"host": self.host, "port": self.port, "tls_port": self.tls_port},
        )

    async def wait(self) -> None:
        """Until the server stops (after `request_stop()` or `stop()`)."""
        await self._plain.wait()

    def request_stop(self) -> None:
        """Ask uvicorn to shut down gracefully (safe from a signal handler callback)."""
        if self._tls is not None:
            self._tls.request_stop()
        self._plain.request_stop()

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop: live sessions get `SessionEnded {reason: "shutdown"}`, then uvicorn
        closes, then the lifespan releases everything (the HTTPS server first: it shares the
        runtime)."""
        if self._tls is not None:
            await self._tls.stop(timeout_s)
        await self._plain.stop(timeout_s)

    async def __aenter__(self) -> OrchestratorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
