"""The console's access rules on a real uvicorn with a real Redis: reading on loopback and
off it, actions refused (401/403) and changing nothing, the sign-in rate limit, the cookie's
flags behind HTTPS, no secret in any page, log or metric, and the refusal to start off
loopback without a token."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from duplex.asgiserver import InProcessServer
from duplex.console.app import ConsoleServer, build_console_app
from duplex.console.config import ConsoleConfig, ConsoleRedisConfig, ConsoleSection
from duplex.registry import keys

from tests.integration.console_client import ConsoleClient

REPO = Path(__file__).resolve().parents[2]
TOKEN = "auth-test-token-5f2c"
SECRET = "auth-test-session-secret-9d41"


def console_config(redis_url: str, *, host: str = "127.0.0.1") -> ConsoleConfig:
    return ConsoleConfig(
        console=ConsoleSection(
            host=host, port=0, admin_token=TOKEN, session_secret=SECRET, refresh_ms=500
        ),
        redis=ConsoleRedisConfig(url=redis_url, worker_ttl_ms=1000, reconcile_interval_ms=200),
    )


@pytest.fixture
async def console(redis_url: str) -> AsyncIterator[ConsoleServer]:
    async with ConsoleServer(console_config(redis_url)) as server:
        yield server


@pytest.fixture
async def remote_console(redis_url: str) -> AsyncIterator[str]:
    """A console configured for a non-loopback bind (192.0.2.10, a documentation address),
    served on 127.0.0.1 so that the test's traffic stays on this machine."""
    app = build_console_app(console_config(redis_url, host="192.0.2.10"))
    server = InProcessServer(app, host="127.0.0.1", port=0, name="console-test")
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


def routing_hash(redis_url: str) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return dict(client.hgetall(keys.ROUTING))  # type: ignore[arg-type]
    finally:
        client.close()


async def test_on_loopback_every_read_only_page_is_open(console: ConsoleServer) -> None:
    browser = ConsoleClient(console.url)
    for path in ("/workers", "/gpus", "/sessions", "/routing", "/signin", "/health", "/metrics"):
        assert (await browser.get(path)).status == 200, path
    for path in ("/fragments/workers", "/fragments/gpus", "/fragments/sessions"):
        assert (await browser.get(path, headers={"HX-Request": "true"})).status == 200, path
    assert "duplex_console" not in browser.cookies  # a reader gets no session at all


async def test_actions_are_refused_without_sign_in_csrf_or_same_origin_and_change_nothing(
    redis_url: str, console: ConsoleServer
) -> None:
    browser = ConsoleClient(console.url)
    same = {"Origin": browser.origin}
    toggle = {"strategy": "round_robin"}
    # Not signed in: 401, whatever else is right.
    assert (await browser.post("/signout", {}, headers=same)).status == 401
    assert (await browser.post("/routing", toggle, headers=same)).status == 401
    wrong = await ConsoleClient(console.url).sign_in("not-the-token")
    assert wrong.status == 401
    signed = await browser.sign_in(TOKEN)
    assert signed.status == 303
    csrf = (await browser.get("/workers")).csrf()
    # Signed in, no or a wrong CSRF token: 403.
    assert (await browser.post("/routing", toggle, headers=same)).status == 403
    bad = {**toggle, "csrf_token": "x" * 43}
    assert (await browser.post("/routing", bad, headers=same)).status == 403
    assert (await browser.post("/signout", {}, headers=same)).status == 403
    # Signed in with the token, but from another site: 403.
    good = {**toggle, "csrf_token": csrf}
    for other in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/x"}):
        assert (await browser.post("/routing", good, headers=other)).status == 403
        assert (await browser.post("/signout", {"csrf_token": csrf}, headers=other)).status == 403
    assert routing_hash(redis_url) == {}  # nothing was written
    # The same request, right in every way, goes through (the refusals were the checks).
    assert (await browser.post("/routing", good, headers=same)).status == 200
    assert routing_hash(redis_url)["load_balancing_strategy"] == "round_robin"
    out = await browser.post("/signout", {"csrf_token": csrf}, headers=same)
    assert out.status == 303
    assert (await browser.post("/routing", good, headers=same)).status == 401
    metrics = (await browser.get("/metrics")).text
    assert 'duplex_console_actions_total{action="signout",outcome="ok"} 1.0' in metrics


async def test_htmx_requests_carry_the_csrf_token_in_a_header(console: ConsoleServer) -> None:
    """The page puts the token on <body hx-headers>; an HTMX post sends it as X-CSRF-Token."""
    browser = ConsoleClient(console.url)
    await browser.sign_in(TOKEN)
    page = (await browser.get("/gpus")).text
    csrf = (await browser.get("/gpus")).csrf()
    assert f"""hx-headers='{{"X-CSRF-Token": "{csrf}"}}'""" in page
    headers = {"Origin": browser.origin, "HX-Request": "true", "X-CSRF-Token": csrf}
    assert (await browser.post("/signout", {}, headers=headers)).status == 303


async def test_wrong_tokens_are_rate_limited(console: ConsoleServer) -> None:
    """Five wrong tokens, then 429 with Retry-After, even for the right token."""
    browser = ConsoleClient(console.url)
    for n in range(5):
        reply = await browser.sign_in(f"wrong-{n}")
        assert reply.status == 401
        assert "That is not the admin token." in reply.text
    limited = await browser.sign_in(TOKEN)
    assert limited.status == 429
    assert 1 <= int(limited.header("retry-after") or "0") <= 60
    assert "duplex_console" not in browser.cookies
    metrics = (await browser.get("/metrics")).text
    assert "duplex_console_signin_failures_total 5.0" in metrics


async def test_off_loopback_every_page_needs_the_sign_in(remote_console: str) -> None:
    browser = ConsoleClient(remote_console)
    for path in ("/workers", "/gpus", "/sessions", "/routing", "/workers/w1"):
        page = await browser.get(path)
        assert page.status == 303, path
        assert page.header("location") == f"/signin?next={path}"
    fragment = await browser.get("/fragments/workers", headers={"HX-Request": "true"})
    assert fragment.status == 401
    assert fragment.header("hx-redirect") == "/signin"
    for path in ("/health", "/metrics", "/signin", "/static/htmx.min.js", "/static/console.css"):
        assert (await browser.get(path)).status == 200, path
    signin = await browser.sign_in(TOKEN)
    assert signin.status == 303
    for path in ("/workers", "/gpus", "/sessions", "/routing"):
        assert (await browser.get(path)).status == 200, path


async def test_no_secret_in_a_page_a_log_line_or_a_metric(
    console: ConsoleServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    browser = ConsoleClient(console.url)
    await ConsoleClient(console.url).sign_in(TOKEN + "-wrong")
    await browser.sign_in(TOKEN)
    texts = [caplog.text]
    for path in ("/workers", "/gpus", "/sessions", "/routing", "/signin", "/metrics"):
        reply = await browser.get(path)
        texts += [reply.text, *(f"{k}: {v}" for k, v in reply.headers)]
    texts.append(caplog.text)
    texts += [f"{k}={v}" for k, v in browser.cookies.items()]
    for text in texts:
        assert TOKEN not in text and SECRET not in text


async def test_the_cookie_is_secure_when_served_over_https(console: ConsoleServer) -> None:
    """Behind a TLS proxy on this machine (X-Forwarded-Proto from 127.0.0.1, which uvicorn
    trusts) the session cookie gets the Secure flag; over plain HTTP it cannot have it."""
    https_origin = f"https://127.0.0.1:{console.port}"
    behind = await ConsoleClient(console.url).post(
        "/signin",
        {"token": TOKEN},
        headers={"X-Forwarded-Proto": "https", "Origin": https_origin},
    )
    assert behind.status == 303
    flags = [f.strip().lower() for f in (behind.header("set-cookie") or "").split(";")]
    assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
    plain = await ConsoleClient(console.url).sign_in(TOKEN)
    assert "secure" not in [
        f.strip().lower() for f in (plain.header("set-cookie") or "").split(";")
    ]


def test_the_console_refuses_a_non_loopback_bind_without_a_token(redis_url: str) -> None:
    env = {**os.environ, "CONSOLE_HOST": "0.0.0.0", "REDIS_URL": redis_url}
    env.pop("CONSOLE_ADMIN_TOKEN", None)
    refused = subprocess.run(
        [sys.executable, "-m", "duplex.console", "--config", "config/console.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    assert refused.returncode == 2
    assert "0.0.0.0" in refused.stderr and "CONSOLE_ADMIN_TOKEN" in refused.stderr
    assert "serving" not in refused.stderr
