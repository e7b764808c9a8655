"""Steering through the console, with a real Redis, real tone workers, a real orchestrator and
the real console over HTTP: a strategy set on the routing page routes the orchestrator's next
session, drain keeps sessions off a worker, load / unload change what the worker holds, speak
returns the worker's voice; every refused or bad request says why and changes nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import numpy as np
import pytest
from duplex.audio.wav import decode_wav
from duplex.registry import keys
from duplex.registry.orchestrators import OrchestratorPublisher, OrchestratorRecord
from duplex.registry.records import PriorityRule, RoutingSettings, Strategy

from tests.integration.console_client import HttpResponse
from tests.integration.console_fleet import TOKEN, Fleet, running_fleet, until
from tests.integration.orchestrator_fixtures import FRAME_MS, tone_frames


@pytest.fixture
async def fleet(redis_url: str) -> AsyncIterator[Fleet]:
    async with running_fleet(redis_url) as running:
        yield running


async def post(
    fleet: Fleet, path: str, csrf: str, form: dict[str, str] | None = None
) -> HttpResponse:
    """A post as the page's HTMX makes it: same origin, the CSRF token, HX-Request."""
    headers = {"Origin": fleet.http.origin, "HX-Request": "true"}
    return await fleet.http.post(path, {"csrf_token": csrf, **(form or {})}, headers=headers)


def orchestrator_strategy(fleet: Fleet) -> Strategy:
    strategy: Strategy = fleet.orchestrator.app.state.runtime.router.settings().strategy
    return strategy


def pick(html: str, strategy: Strategy) -> str:
    """The worker the what-if shows for one strategy ("" for no worker)."""
    found = re.search(rf'data-strategy="{strategy.value}" data-worker="([^"]*)"', html)
    assert found is not None, html
    return found.group(1)


async def test_a_strategy_set_in_the_console_routes_the_next_session(fleet: Fleet) -> None:
    # The orchestrator's configured least_loaded (prefer resident): tone-rt02 only on w1.
    assert await fleet.sessions("tone-rt02", 3) == ["w1", "w1", "w1"]
    csrf = await fleet.sign_in()
    reply = await post(fleet, "/routing", csrf, {"strategy": "round_robin"})
    assert reply.status == 200, reply.text
    assert "Routing set: round_robin" in reply.text
    assert reply.header("hx-trigger") == "routing-changed"
    assert (await fleet.redis.hgetall(keys.ROUTING))["load_balancing_strategy"] == "round_robin"
    await until(lambda: orchestrator_strategy(fleet) is Strategy.ROUND_ROBIN, "the orchestrator")
    assert sorted(await fleet.sessions("tone-rt02", 2)) == ["w1", "w2"]
    page = await fleet.http.get("/routing")
    assert 'data-strategy="round_robin">round_robin' in page.text
    assert 'data-override="yes"' in page.text

    reply = await post(fleet, "/routing/reset", csrf)
    assert reply.status == 200 and "Override removed" in reply.text
    assert await fleet.redis.exists(keys.ROUTING) == 0
    await until(lambda: orchestrator_strategy(fleet) is Strategy.LEAST_LOADED, "the fallback")


async def test_the_parameters_form_writes_every_parameter(fleet: Fleet) -> None:
    csrf = await fleet.sign_in()
    form = {
        "strategy": "priority",
        "prefer_resident_models": "false",
        "resident_weight": "1.5",
        "overflow_threshold": "0",
        "required_capabilities": "streaming",
        "worker_priority": "tone=1\npiper=2",
    }
    reply = await post(fleet, "/routing", csrf, form)
    assert reply.status == 200, reply.text
    expected = RoutingSettings(
        strategy=Strategy.PRIORITY,
        prefer_resident_models=False,
        resident_weight=1.5,
        required_capabilities=("streaming",),
        worker_priority=(PriorityRule("tone", 1), PriorityRule("piper", 2)),
        overflow_threshold=0,
    )
    assert await fleet.redis.hgetall(keys.ROUTING) == expected.encode()
    await until(
        lambda: fleet.orchestrator.app.state.runtime.router.settings() == expected,
        "the orchestrator to read the parameters",
    )


async def test_a_partial_form_applies_over_what_redis_holds_now(fleet: Fleet) -> None:
    """A toggle, then at once a parameter: the second post keeps the first's strategy even
    before the console's view has caught up with it."""
    csrf = await fleet.sign_in()
    assert (await post(fleet, "/routing", csrf, {"strategy": "priority"})).status == 200
    assert (await post(fleet, "/routing", csrf, {"overflow_threshold": "2"})).status == 200
    stored = RoutingSettings.decode(await fleet.redis.hgetall(keys.ROUTING), RoutingSettings())
    assert (stored.strategy, stored.overflow_threshold) == (Strategy.PRIORITY, 2)


async def test_drain_from_the_console_keeps_new_sessions_off_the_worker(fleet: Fleet) -> None:
    csrf = await fleet.sign_in()
    reply = await post(fleet, "/workers/w1/drain", csrf)
    assert reply.status == 200 and "w1 is drained" in reply.text
    assert await fleet.redis.smembers(keys.DRAINED) == {"w1"}
    view = fleet.orchestrator.app.state.runtime.view
    await until(lambda: "w1" in view.drained(), "the orchestrator to see the drain")
    assert set(await fleet.sessions("tone-rt02", 3)) == {"w2"}

    reply = await post(fleet, "/workers/w1/undrain", csrf)
    assert reply.status == 200 and "w1 takes new sessions again" in reply.text
    assert await fleet.redis.smembers(keys.DRAINED) == set()
    await until(lambda: not view.drained(), "the orchestrator to see the undrain")
    assert await fleet.session("tone-rt02") == "w1"


async def test_load_and_unload_change_the_workers_resident_models(fleet: Fleet) -> None:
    csrf = await fleet.sign_in()
    assert await fleet.resident("w2") == {"tone-fast"}
    reply = await post(fleet, "/workers/w2/load", csrf, {"model_id": "tone-rt02"})
    assert reply.status == 200, reply.text
    assert re.search(r"tone-rt02 loaded on w2 in \d+ ms\.", reply.text), reply.text
    assert await fleet.resident("w2") == {"tone-fast", "tone-rt02"}
    view = fleet.state.view
    await until(lambda: "tone-rt02" in view.workers()["w2"].resident_models, "a heartbeat")
    again = await post(fleet, "/workers/w2/load", csrf, {"model_id": "tone-rt02"})
    assert "tone-rt02 was already resident on w2." in again.text

    reply = await post(fleet, "/workers/w2/unload", csrf, {"model_id": "tone-rt02"})
    assert reply.status == 200 and "tone-rt02 unloaded from w2." in reply.text
    assert await fleet.resident("w2") == {"tone-fast"}
    await until(lambda: "tone-rt02" not in view.workers()["w2"].resident_models, "a heartbeat")
    page = await fleet.http.get("/workers/w2")
    assert page.status == 200 and 'data-testid="action-panel"' in page.text


async def test_speak_returns_the_chosen_workers_voice_as_a_wav(fleet: Fleet) -> None:
    csrf = await fleet.sign_in()
    text = "Hello from w2."
    reply = await post(fleet, "/workers/w2/speak", csrf, {"text": text})
    assert reply.status == 200, reply.text
    assert reply.header("content-type") == "audio/wav"
    assert (reply.header("x-worker"), reply.header("x-model-id")) == ("w2", "tone-fast")
    wav = decode_wav(reply.body)
    assert wav.sample_rate == 24000
    assert wav.duration_ms == pytest.approx(tone_frames(text) * FRAME_MS, abs=FRAME_MS)
    samples = wav.array().astype(np.float64)
    assert float(np.sqrt(np.mean(samples**2))) > 300  # a voice, not silence
    chosen = await post(fleet, "/workers/w1/speak", csrf, {"text": "Hi.", "model_id": "tone-rt02"})
    assert chosen.status == 200 and chosen.header("x-model-id") == "tone-rt02"


async def test_refused_actions_change_nothing(fleet: Fleet) -> None:
    """Signed out, a wrong token, no CSRF token, cross-origin: 401/403 and nothing moves."""
    await fleet.state.admin.set_routing(RoutingSettings(strategy=Strategy.PRIORITY))
    before = await fleet.steering()
    resident = {w: await fleet.resident(w) for w in fleet.workers}
    actions = [
        ("/routing", {"strategy": "round_robin"}),
        ("/routing/reset", {}),
        ("/workers/w1/drain", {}),
        ("/workers/w2/load", {"model_id": "tone-rt02"}),
        ("/workers/w1/unload", {"model_id": "tone-rt02"}),
        ("/workers/w1/speak", {"text": "Hi."}),
    ]
    same_origin = {"Origin": fleet.http.origin}
    # Not signed in at all, then after a wrong token (which sets no session).
    for wrong in (None, "not-the-token"):
        if wrong is not None:
            assert (await fleet.http.sign_in(wrong)).status == 401
        for path, form in actions:
            reply = await fleet.http.post(path, {"csrf_token": "x", **form}, headers=same_origin)
            assert reply.status == 401, (path, reply.text)
    csrf = await fleet.sign_in()
    for path, form in actions:
        missing = await fleet.http.post(path, form, headers=same_origin)
        assert missing.status == 403 and "CSRF" in missing.text, path
        wrong_csrf = await fleet.http.post(path, {"csrf_token": "x", **form}, headers=same_origin)
        assert wrong_csrf.status == 403, path
        cross = await fleet.http.post(
            path, {"csrf_token": csrf, **form}, headers={"Origin": "http://evil.test"}
        )
        assert cross.status == 403 and "cross-origin" in cross.text, path
    assert await fleet.steering() == before
    assert {w: await fleet.resident(w) for w in fleet.workers} == resident
    metrics = (await fleet.http.get("/metrics")).text
    assert 'duplex_console_actions_total{action="drain",outcome="unauthorized"} 2.0' in metrics
    assert 'duplex_console_actions_total{action="drain",outcome="forbidden"} 3.0' in metrics


@pytest.mark.parametrize(
    ("path", "form", "status", "message"),
    [
        ("/routing", {"strategy": "fastest"}, 400, "unknown strategy &#39;fastest&#39;"),
        ("/routing", {"resident_weight": "-1"}, 400, "-1 is out of range: 0 to 1000"),
        ("/routing", {"resident_weight": "lots"}, 400, "&#39;lots&#39; is not a number"),
        ("/routing", {"overflow_threshold": "-5"}, 400, "-5 is out of range: 0 to 1000000"),
        ("/routing", {"overflow_threshold": "1.5"}, 400, "is not a whole number"),
        ("/routing", {"worker_priority": "tone=0"}, 400, "priority 0 is out of range: 1 to"),
        ("/routing", {"required_capabilities": "telepathy"}, 400, "unknown capability"),
        ("/workers/ghost/drain", {}, 404, "no live worker named &#39;ghost&#39;"),
        ("/workers/ghost/load", {"model_id": "tone-rt02"}, 404, "no live worker named"),
        ("/workers/w1/load", {"model_id": "nope"}, 404, "w1 has no model &#39;nope&#39;"),
        ("/workers/w1/unload", {"model_id": "nope"}, 404, "(its models: "),
        ("/workers/w1/speak", {"text": "x" * 501}, 400, "at most 500"),
    ],
)
async def test_bad_input_gets_a_clear_message_and_changes_nothing(
    fleet: Fleet, path: str, form: dict[str, str], status: int, message: str
) -> None:
    await fleet.state.admin.set_routing(RoutingSettings(strategy=Strategy.PRIORITY))
    before = await fleet.steering()
    resident = await fleet.resident("w1")
    csrf = await fleet.sign_in()
    # The valid field beside the bad one must not be written either.
    reply = await post(fleet, path, csrf, {**form, "strategy": form.get("strategy", "round_robin")})
    assert reply.status == status, reply.text
    assert message in reply.text
    assert await fleet.steering() == before
    assert await fleet.resident("w1") == resident


async def test_whatif_reads_the_live_fleet_and_every_orchestrators_inflight(
    fleet: Fleet, redis_url: str
) -> None:
    first = await fleet.http.get("/routing/whatif?language=en", headers={"HX-Request": "true"})
    assert first.status == 200
    # Two idle workers tie: the counter at 0 picks w1, and rotation reaches w2.
    assert pick(first.text, Strategy.LEAST_LOADED) == "w1"
    assert "then w2" in first.text
    # Another orchestrator has just routed five sessions to w1 (not yet in its heartbeat).
    other = OrchestratorRecord("other", "http://127.0.0.1:1", 0.0, 0.0, inflight={"w1": 5})
    publisher = OrchestratorPublisher(redis_url, "other", lambda: other, ttl_s=30)
    try:
        await publisher.publish_once()
        page = await fleet.http.get("/routing/whatif?language=en", headers={"HX-Request": "true"})
    finally:
        await publisher.stop()
    assert pick(page.text, Strategy.LEAST_LOADED) == "w2"
    assert pick(page.text, Strategy.ROUND_ROBIN) == "w1"  # load ignored
    assert "summed over 2" in page.text  # the real orchestrator and the other one

    unknown = await fleet.http.get("/routing/whatif?language=en&model_id=nope")
    assert unknown.status == 200 and "<html" in unknown.text
    assert pick(unknown.text, Strategy.PRIORITY) == ""
    assert "model &#39;nope&#39; is on no live worker" in unknown.text
    french = await fleet.http.get("/routing/whatif?language=fr", headers={"HX-Request": "true"})
    assert "no worker for language=&#39;fr&#39;" in french.text
    # With the model asked for, residency counts (prefer_resident_models): w1 only.
    rt02 = await fleet.http.get(
        "/routing/whatif?language=en&model_id=tone-rt02", headers={"HX-Request": "true"}
    )
    assert pick(rt02.text, Strategy.LEAST_LOADED) == "w1"
    assert "then w2" not in rt02.text.split('data-strategy="least_loaded"')[1].split("</tr>")[0]


async def test_the_routing_page_shows_the_active_parameters_and_where_they_come_from(
    fleet: Fleet,
) -> None:
    page = await fleet.http.get("/routing")
    assert page.status == 200
    assert 'data-override="no"' in page.text
    assert 'data-testid="routing-signin-hint"' in page.text  # read-only on loopback
    assert "strategy-toggle-" not in page.text
    await fleet.state.admin.set_routing(
        RoutingSettings(strategy=Strategy.PRIORITY, worker_priority=(PriorityRule("tone", 1),))
    )
    await until(lambda: fleet.state.view.routing().strategy is Strategy.PRIORITY, "the view")
    await fleet.sign_in()
    page = await fleet.http.get("/routing")
    assert 'data-override="yes"' in page.text
    assert 'data-strategy="priority">priority' in page.text
    assert "tone=1" in page.text
    assert page.text.count('data-testid="strategy-toggle-') == 5
    assert TOKEN not in page.text
