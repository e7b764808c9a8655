"""Worker actions at the HTTP edge, with small fakes behind them (the registry view, the admin,
the worker clients): each bad input gets its status and a clear message and changes nothing,
each refusal is counted, a worker's error comes back as 502 with its message.

The app is the console's real auth and action routes under a real uvicorn on 127.0.0.1;
only what lies behind `ConsoleState` is fake (the integration tests use the real parts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest
from duplex.audio.frames import PcmFrame
from duplex.audio.wav import decode_wav
from duplex.console import actions
from duplex.console.actions import action_routes
from duplex.console.app import console_templates
from duplex.console.auth import SessionCookieMiddleware, auth_routes
from duplex.console.config import ConsoleConfig, ConsoleSection
from duplex.console.metrics import ConsoleMetrics
from duplex.console.routing import routing_routes
from duplex.console.state import ConsoleState
from duplex.registry.records import Capabilities, RoutingSettings, WorkerMetrics, WorkerRecord
from duplex.workerclient import (
    LoadResult,
    StreamOpened,
    WorkerCapacityError,
    WorkerModel,
    WorkerStreamError,
    WorkerUnavailable,
    WorkerUtteranceEnd,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette
from starlette.middleware import Middleware

from tests.integration.browser import serve_app
from tests.integration.console_client import ConsoleClient, HttpResponse

TOKEN = "unit-admin-token"


def _record(name: str) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr="grpc://127.0.0.1:7001",
        adapter_type="tone",
        capabilities=Capabilities(languages=("en",)),
        resident_models=("tone-fast",),
        available_models=("tone-fast", "tone-rt02"),
        metrics=WorkerMetrics(),
        last_heartbeat=time.time(),
    )


@dataclass
class FakeView:
    live: dict[str, WorkerRecord]
    drained_names: set[str] = field(default_factory=set)

    def workers(self) -> Mapping[str, WorkerRecord]:
        return self.live

    def drained(self) -> frozenset[str]:
        return frozenset(self.drained_names)

    def routing(self) -> RoutingSettings:
        return RoutingSettings()

    def redis_ok(self) -> bool:
        return True


@dataclass
class FakeAdmin:
    calls: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False

    async def _do(self, what: str, name: str) -> None:
        if self.down:
            raise RedisConnectionError("Connection refused")
        self.calls.append((what, name))

    async def drain(self, name: str) -> None:
        await self._do("drain", name)

    async def undrain(self, name: str) -> None:
        await self._do("undrain", name)


class FakeRedis:
    async def exists(self, *names: str) -> int:
        return 0

    async def zrange(self, *args: Any) -> list[str]:
        return []

    async def hgetall(self, name: str) -> dict[str, str]:
        return {}


@dataclass
class FakeStream:
    frames: list[PcmFrame]
    model_id: str
    ends: bool = True
    sent: list[tuple[str, bool]] = field(default_factory=list)
    closed: bool = False

    @property
    def opened(self) -> StreamOpened:
        return StreamOpened("s", self.model_id, 24000, 20)

    async def send_text(self, text: str, is_final: bool) -> None:
        self.sent.append((text, is_final))

    async def next_event(self, timeout_s: float | None) -> PcmFrame | WorkerUtteranceEnd | None:
        if self.frames:
            return self.frames.pop(0)
        if self.ends:
            return WorkerUtteranceEnd(0, 0, 0, False, 0)
        await asyncio.sleep(3600)  # a worker that never finishes
        return None

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeClient:
    """What the worker answers; `error` (when set) is raised by every call."""

    error: Exception | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    stream: FakeStream | None = None

    def _maybe_fail(self) -> None:
        if self.error is not None:
            raise self.error

    async def load_model(self, model_id: str, timeout_s: float = 60.0) -> LoadResult:
        self.calls.append(("load", model_id))
        self._maybe_fail()
        model = WorkerModel(model_id, "tone", ("en",), (), True, 24000, "", 0)
        return LoadResult(model, loaded_now=True, load_ms=12.4)

    async def unload_model(self, model_id: str, timeout_s: float = 5.0) -> str:
        self.calls.append(("unload", model_id))
        self._maybe_fail()
        return model_id

    async def open_stream(
        self, session_id: str, model_id: str | None, *args: Any, **kw: Any
    ) -> Any:
        self.calls.append(("open", (session_id, model_id, args, kw)))
        self._maybe_fail()
        tone = (np.sin(np.arange(480) / 3.0) * 8000).astype("<i2").tobytes()
        self.stream = self.stream or FakeStream(
            [PcmFrame(tone, 24000)] * 5, model_id or "tone-fast"
        )
        return self.stream


@dataclass
class FakeClients:
    client: FakeClient = field(default_factory=FakeClient)

    def get(self, target: str) -> FakeClient:
        return self.client


@dataclass
class Console:
    client: ConsoleClient
    view: FakeView
    admin: FakeAdmin
    worker: FakeClient
    metrics: ConsoleMetrics
    csrf: str = ""

    async def post(self, path: str, form: dict[str, str] | None = None, **kw: Any) -> HttpResponse:
        headers = {"Origin": self.client.origin, "HX-Request": "true", **kw}
        return await self.client.post(
            path, {"csrf_token": self.csrf, **(form or {})}, headers=headers
        )

    def count(self, action: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "duplex_console_actions_total", {"action": action, "outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    config = ConsoleConfig(console=ConsoleSection(admin_token=TOKEN, session_secret="s" * 32))
    view = FakeView({"w1": _record("w1")})
    admin, clients, metrics = FakeAdmin(), FakeClients(), ConsoleMetrics()
    state = ConsoleState(
        config=config,
        view=cast(Any, view),
        redis=cast(Any, FakeRedis()),
        admin=cast(Any, admin),
        clients=cast(Any, clients),
        templates=console_templates(config),
        metrics=metrics,
    )
    app = Starlette(
        routes=[*auth_routes(), *routing_routes(), *action_routes()],
        middleware=[Middleware(SessionCookieMiddleware, secret_key=config.console.session_secret)],
    )
    app.state.console = state
    async with serve_app(app) as served:
        client = ConsoleClient(served.url().rstrip("/"))
        assert (await client.sign_in(TOKEN)).status == 303
        page = await client.get("/routing")
        yield Console(client, view, admin, clients.client, metrics, page.csrf())


# -- drain / undrain ----------------------------------------------------------------------------


async def test_drain_of_a_live_worker_writes_the_flag(console: Console) -> None:
    reply = await console.post("/workers/w1/drain")
    assert reply.status == 200
    assert 'data-outcome="ok"' in reply.text and "w1 is drained" in reply.text
    assert console.admin.calls == [("drain", "w1")]
    assert console.count("drain", "ok") == 1


async def test_drain_of_an_unknown_worker_is_404_and_changes_nothing(console: Console) -> None:
    reply = await console.post("/workers/ghost/drain")
    assert reply.status == 404
    assert "no live worker named &#39;ghost&#39;" in reply.text
    assert console.admin.calls == []
    assert console.count("drain", "not_found") == 1


async def test_undrain_clears_the_flag_of_a_worker_that_has_gone(console: Console) -> None:
    console.view.drained_names.add("gone")
    assert (await console.post("/workers/gone/undrain")).status == 200
    assert (await console.post("/workers/ghost/undrain")).status == 404
    assert console.admin.calls == [("undrain", "gone")]


async def test_redis_down_is_503_and_says_nothing_changed(console: Console) -> None:
    console.admin.down = True
    reply = await console.post("/workers/w1/drain")
    assert reply.status == 503
    assert "Redis could not be written (ConnectionError); nothing was changed" in reply.text
    assert console.count("drain", "redis_error") == 1


async def test_a_plain_form_post_gets_a_whole_page(console: Console) -> None:
    reply = await console.client.post(
        "/workers/ghost/drain",
        {"csrf_token": console.csrf},
        headers={"Origin": console.client.origin},
    )
    assert reply.status == 404
    assert "<html" in reply.text and "no live worker named" in reply.text


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "status", "outcome"),
    [
        ("signed out", 401, "unauthorized"),
        ("no csrf", 403, "forbidden"),
        ("wrong csrf", 403, "forbidden"),
        ("cross origin", 403, "forbidden"),
    ],
)
async def test_every_action_is_refused_without_the_admin(
    console: Console, case: str, status: int, outcome: str
) -> None:
    form: dict[str, str] = {"csrf_token": console.csrf, "model_id": "tone-rt02", "text": "Hi."}
    headers = {"Origin": console.client.origin}
    if case == "signed out":
        console.client.cookies.clear()
    elif case == "no csrf":
        del form["csrf_token"]
    elif case == "wrong csrf":
        form["csrf_token"] = "not-the-token"
    else:
        headers["Origin"] = "http://evil.test"
    for action in ("drain", "undrain", "load", "unload", "speak"):
        reply = await console.client.post(f"/workers/w1/{action}", form, headers=headers)
        assert reply.status == status, (action, reply.text)
        assert console.count(action, outcome) == 1
    assert console.admin.calls == []
    assert console.worker.calls == []


# -- load / unload ------------------------------------------------------------------------------


async def test_load_reports_the_load_time(console: Console) -> None:
    reply = await console.post("/workers/w1/load", {"model_id": "tone-rt02"})
    assert reply.status == 200
    assert "tone-rt02 loaded on w1 in 12 ms." in reply.text
    assert console.worker.calls == [("load", "tone-rt02")]
    assert console.count("load", "ok") == 1


async def test_an_unknown_model_is_404_naming_the_workers_models(console: Console) -> None:
    for action in ("load", "unload", "speak"):
        reply = await console.post(f"/workers/w1/{action}", {"model_id": "nope", "text": "Hi."})
        assert reply.status == 404
        assert "w1 has no model &#39;nope&#39; (its models: tone-fast, tone-rt02)" in reply.text
    assert console.worker.calls == []


async def test_load_without_a_model_is_400(console: Console) -> None:
    reply = await console.post("/workers/w1/load", {"model_id": " "})
    assert reply.status == 400
    assert "choose a model (on w1: tone-fast, tone-rt02)" in reply.text
    assert console.count("load", "bad_request") == 1


async def test_a_worker_error_is_502_with_its_message(console: Console) -> None:
    console.worker.error = WorkerCapacityError("127.0.0.1:7001", "RESOURCE_EXHAUSTED: cap 1")
    reply = await console.post("/workers/w1/load", {"model_id": "tone-rt02"})
    assert reply.status == 502
    assert "w1: RESOURCE_EXHAUSTED: cap 1" in reply.text
    console.worker.error = WorkerStreamError("127.0.0.1:7001", "FAILED_PRECONDITION: in use")
    reply = await console.post("/workers/w1/unload", {"model_id": "tone-fast"})
    assert reply.status == 502
    assert "FAILED_PRECONDITION: in use" in reply.text
    assert console.count("load", "worker_error") == 1
    assert console.count("unload", "worker_error") == 1


async def test_unload_says_when_the_model_was_not_resident(console: Console) -> None:
    reply = await console.post("/workers/w1/unload", {"model_id": "tone-rt02"})
    assert reply.status == 200
    assert "tone-rt02 unloaded from w1 (it was not resident)." in reply.text


# -- speak --------------------------------------------------------------------------------------


async def test_speak_returns_the_workers_audio_as_a_wav(console: Console) -> None:
    reply = await console.post("/workers/w1/speak", {"text": "  Hello there.  "})
    assert reply.status == 200
    assert reply.header("content-type") == "audio/wav"
    assert reply.header("x-model-id") == "tone-fast"
    wav = decode_wav(reply.body)
    assert (wav.sample_rate, wav.samples) == (24000, 5 * 480)
    (_, (session_id, model, args, kw)) = console.worker.calls[0]
    assert session_id.startswith("console-speak-") and model is None
    assert args == (24000, "en") and kw["lead_ms"] == 0
    stream = console.worker.stream
    assert stream is not None and stream.sent == [("Hello there.", True)] and stream.closed


async def test_speak_with_a_chosen_model(console: Console) -> None:
    reply = await console.post("/workers/w1/speak", {"text": "Hi.", "model_id": "tone-rt02"})
    assert reply.status == 200 and reply.header("x-model-id") == "tone-rt02"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   ", "type a sentence to speak"),
        ("a" * 501, "the text is 501 characters long: at most 500"),
    ],
)
async def test_speak_refuses_empty_or_long_text(console: Console, text: str, message: str) -> None:
    reply = await console.post("/workers/w1/speak", {"text": text})
    assert reply.status == 400
    assert message in reply.text
    assert console.worker.calls == []


async def test_speak_on_an_unreachable_worker_is_502(console: Console) -> None:
    console.worker.error = WorkerUnavailable("127.0.0.1:7001", "UNAVAILABLE: connection refused")
    reply = await console.post("/workers/w1/speak", {"text": "Hi."})
    assert reply.status == 502
    assert "w1: UNAVAILABLE: connection refused" in reply.text
    assert console.count("speak", "worker_error") == 1


async def test_a_worker_that_never_finishes_is_504_and_the_stream_is_closed(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actions, "SPEAK_DEADLINE_S", 0.2)
    console.worker.stream = FakeStream([], "tone-fast", ends=False)
    reply = await console.post("/workers/w1/speak", {"text": "Hi."})
    assert reply.status == 504
    assert "w1 did not finish the sentence within 0.2 s" in reply.text
    assert console.worker.stream.closed
