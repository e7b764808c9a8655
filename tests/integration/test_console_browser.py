"""The console in a real headless Chromium against a real fleet (Redis, two tone workers, an
orchestrator, the console): an operator signs in, clicks a strategy toggle and the next
session is routed by it; drains a worker from the workers page; loads, unloads and hears a
model on a worker's page. Screenshots go to out/screenshots/console-*.png."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from duplex.registry import keys
from duplex.registry.records import Strategy

from tests.integration.browser import Browser, open_chromium
from tests.integration.console_fleet import TOKEN, Fleet, running_fleet, until

LIMIT_S = 15.0


@pytest.fixture
async def fleet(redis_url: str) -> AsyncIterator[Fleet]:
    async with running_fleet(redis_url) as running:
        yield running


def q(testid: str) -> str:
    """A JavaScript expression for the element with `data-testid`."""
    selector = json.dumps('[data-testid="' + testid + '"]')
    return f"document.querySelector({selector})"


async def sign_in(browser: Browser, fleet: Fleet, next_path: str) -> None:
    """Through the sign-in page, as a person does it."""
    await browser.navigate(f"{fleet.console.url}/signin?next={next_path}")
    await browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(TOKEN)};"
        " document.querySelector('form[action=\"/signin\"] button').click(); true"
    )
    await browser.wait_for(
        f"location.pathname === {json.dumps(next_path)} && document.readyState === 'complete'"
        " && !!document.querySelector('.who-badge')",
        limit_s=LIMIT_S,
        what="the signed-in page",
    )


async def test_a_strategy_toggle_clicked_in_the_browser_routes_the_next_session(
    fleet: Fleet, tmp_path: Path
) -> None:
    assert await fleet.sessions("tone-rt02", 2) == ["w1", "w1"]  # least_loaded, resident
    async with open_chromium(tmp_path) as browser:
        await sign_in(browser, fleet, "/routing")
        await browser.wait_for(f"{q('routing-active')}.dataset.strategy === 'least_loaded'")
        await browser.screenshot(tmp_path / "console-routing.png")

        await browser.click("strategy-toggle-round_robin")
        await browser.wait_for(
            f"{q('routing-active')}.dataset.strategy === 'round_robin'",
            limit_s=LIMIT_S,
            what="the panel to show round_robin",
            explain=f"{q('routing-panel')}.innerText",
        )
        message = await browser.evaluate(f"{q('routing-message')}.innerText")
        assert "Routing set: round_robin" in message
        redis_strategy = await fleet.redis.hget(keys.ROUTING, "load_balancing_strategy")
        assert redis_strategy == "round_robin"
        router = fleet.orchestrator.app.state.runtime.router
        await until(lambda: router.settings().strategy is Strategy.ROUND_ROBIN, "orchestrator")
        assert sorted(await fleet.sessions("tone-rt02", 2)) == ["w1", "w2"]

        # What-if for a model: the form asks again without a reload.
        await browser.evaluate(f"{q('whatif-model')}.value = 'tone-rt02'; true")
        await browser.click("whatif-ask")
        await browser.wait_for(
            f"{q('whatif-model')}.value === 'tone-rt02' && !!document.querySelector("
            "'[data-testid=whatif-picks] tr.active[data-strategy=round_robin]')",
            limit_s=LIMIT_S,
            what="the what-if for tone-rt02",
            explain=f"{q('routing-whatif')}.outerHTML.slice(0, 3000)",
        )
        picks = await browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('[data-testid=whatif-picks] tbody"
            " tr')].map(r => [r.dataset.strategy, r.dataset.worker]))"
        )
        assert picks["least_loaded"] in {"w1", "w2"} and set(picks) == {s.value for s in Strategy}
        await browser.screenshot(tmp_path / "console-routing-whatif.png")

        # A bad value: the panel shows why; nothing is written.
        before = await fleet.redis.hgetall(keys.ROUTING)
        await browser.evaluate(f"{q('routing-resident-weight')}.value = '-1'; true")
        await browser.click("routing-save")
        await browser.wait_for(
            f"{q('routing-error')} && {q('routing-error')}.innerText.includes('out of range')",
            limit_s=LIMIT_S,
            what="the error in the panel",
        )
        assert await fleet.redis.hgetall(keys.ROUTING) == before
        await browser.screenshot(tmp_path / "console-routing-error.png")
    assert not [line for line in browser.log.lines if line.startswith("exception")]


async def test_drain_from_the_workers_page_keeps_sessions_off_the_worker(
    fleet: Fleet, tmp_path: Path
) -> None:
    async with open_chromium(tmp_path) as browser:
        await sign_in(browser, fleet, "/workers")
        await browser.wait_for(f"!!{q('drain-w1')}", limit_s=LIMIT_S, what="w1's drain button")
        await click_when_live(browser, "drain-w1")
        await browser.wait_for(
            f"{q('action-result-w1')}.innerText.includes('w1 is drained')",
            limit_s=LIMIT_S,
            what="the drain's result",
        )
        assert await fleet.redis.smembers(keys.DRAINED) == {"w1"}
        # The polled row shows it, and the result message survives the refresh.
        await browser.wait_for(
            "document.querySelector('tr[data-worker=w1]').classList.contains('is-drained')"
            f" && {q('undrain-w1')} && {q('action-result-w1')}.innerText.includes('drained')",
            limit_s=LIMIT_S,
            what="the drained row",
        )
        view = fleet.orchestrator.app.state.runtime.view
        await until(lambda: "w1" in view.drained(), "the orchestrator to see the drain")
        assert set(await fleet.sessions("tone-rt02", 3)) == {"w2"}
        await browser.screenshot(tmp_path / "console-workers-drained.png")

        await click_when_live(browser, "undrain-w1")
        await browser.wait_for(
            f"{q('drain-w1')} && !document.querySelector('tr[data-worker=w1]')"
            ".classList.contains('is-drained')",
            limit_s=LIMIT_S,
            what="the row to serve again",
        )
        assert await fleet.redis.smembers(keys.DRAINED) == set()


async def click_when_live(browser: Browser, testid: str) -> None:
    """Click a row's button once htmx has taken its form over, checked and clicked in one
    script turn. The row is re-rendered by polling every refresh; a button clicked in the
    instant between its insertion and htmx processing it submits its form natively (a
    full-page POST, whose fallback page shows the result), which is not what this tests."""
    button = q(testid)
    script = (
        f"(() => {{ const b = {button}; if (!b || !b.closest('form')['htmx-internal-data'])"
        " return false; b.click(); return true; })()"
    )
    async with asyncio.timeout(LIMIT_S):
        while True:
            if await browser.evaluate(script):
                return
            await asyncio.sleep(0.05)


async def test_load_unload_and_speak_from_a_workers_page(fleet: Fleet, tmp_path: Path) -> None:
    chips = (
        "[...document.querySelectorAll('#worker-detail .chip.resident')].map(c => c.textContent)"
    )
    async with open_chromium(tmp_path) as browser:
        await sign_in(browser, fleet, "/workers/w2")
        assert await browser.evaluate(chips) == ["tone-fast"]

        await browser.evaluate(f"{q('load-model')}.value = 'tone-rt02'; true")
        await browser.click("load")
        await browser.wait_for(
            f"{q('action-panel-result')}.innerText.includes('tone-rt02 loaded on w2')",
            limit_s=LIMIT_S,
            what="the load's result",
        )
        await browser.wait_for(f"{chips}.includes('tone-rt02')", limit_s=LIMIT_S, what="a beat")
        assert await fleet.resident("w2") == {"tone-fast", "tone-rt02"}

        await browser.evaluate(f"{q('unload-model')}.value = 'tone-rt02'; true")
        await browser.click("unload")
        await browser.wait_for(
            f"{q('action-panel-result')}.innerText.includes('tone-rt02 unloaded from w2')",
            limit_s=LIMIT_S,
            what="the unload's result",
        )
        await browser.wait_for(f"!{chips}.includes('tone-rt02')", limit_s=LIMIT_S, what="a beat")
        assert await fleet.resident("w2") == {"tone-fast"}

        await browser.evaluate(f"{q('speak-text')}.value = 'Checking this worker by ear.'; true")
        await browser.click("speak")
        last = await browser.wait_for(
            "window.duplexSpeak && !window.duplexSpeak.busy && window.duplexSpeak.last",
            limit_s=LIMIT_S,
            what="the spoken sentence",
        )
        assert (last["status"], last["type"], last["model"]) == (200, "audio/wav", "tone-fast")
        assert last["bytes"] > 24000  # over half a second of 24 kHz audio
        audio = await browser.wait_for(
            f"(() => {{ const a = {q('speak-audio')}; return !a.hidden && a.duration > 0"
            " && {duration: a.duration, error: a.error}; })()",
            limit_s=LIMIT_S,
            what="the audio element to hold the WAV",
        )
        assert audio["duration"] > 0.5 and audio["error"] is None
        await browser.screenshot(tmp_path / "console-worker-actions.png")

        # Too long a sentence: the refusal is shown, no audio.
        await browser.evaluate(f"{q('speak-text')}.removeAttribute('maxlength'); true")
        await browser.evaluate(f"{q('speak-text')}.value = 'x'.repeat(501); true")
        await browser.click("speak")
        refused = await browser.wait_for(
            "window.duplexSpeak.last.status === 400 && window.duplexSpeak.last",
            limit_s=LIMIT_S,
            what="the refusal",
        )
        assert refused["bytes"] == 0
        text = await browser.evaluate(f"{q('action-panel-result')}.innerText")
        assert "at most 500" in text
    assert not [line for line in browser.log.lines if line.startswith("exception")]
