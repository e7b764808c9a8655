"""The console's access rules on a real Starlette app (no server, no Redis): who reads, who
acts, CSRF and origin checks, the sign-in, its rate limit and the session cookie."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, cast
from urllib.parse import urlencode

import pytest
from duplex.console.app import console_templates
from duplex.console.auth import (
    SESSION_COOKIE,
    SessionCookieMiddleware,
    auth_routes,
    require_admin_action,
    require_reader,
)
from duplex.console.config import ConsoleConfig, ConsoleSection
from duplex.console.metrics import ConsoleMetrics
from duplex.console.ratelimit import FailureLimiter
from duplex.console.state import ConsoleState
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

TOKEN = "correct-horse-battery"
HOST = "console.test:8000"
ORIGIN = f"http://{HOST}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def page(request: Request) -> Response:
    await require_reader(request)
    return PlainTextResponse("a page")


async def action(request: Request) -> Response:
    await require_admin_action(request)
    form = await request.form()  # the handler reads the form again after the check
    return PlainTextResponse(f"done {form.get('value', '')}")


def console_app(
    *, host: str = "127.0.0.1", token: str = TOKEN, secret: str = "s" * 32, clock: Clock
) -> tuple[Starlette, ConsoleState]:
    config = ConsoleConfig(
        console=ConsoleSection(host=host, admin_token=token, session_secret=secret)
    )
    unused = cast(Any, None)  # the registry parts: the rules never touch them
    state = ConsoleState(
        config=config,
        view=unused,
        redis=unused,
        admin=unused,
        clients=unused,
        templates=console_templates(config),
        metrics=ConsoleMetrics(),
        signin_limiter=FailureLimiter(limit=5, window_s=60, clock=clock),
    )
    app = Starlette(
        routes=[
            *auth_routes(),
            Route("/workers", page),
            Route("/fragments/workers", page),
            Route("/act", action, methods=["POST"]),
        ],
        middleware=[Middleware(SessionCookieMiddleware, secret_key=secret)],
    )
    app.state.console = state
    return app, state


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass
class Browser:
    """Calls the ASGI app directly, keeping cookies like a browser."""

    app: Starlette
    client: str = "198.51.100.7"
    scheme: str = "http"
    cookies: dict[str, str] = field(default_factory=dict)

    async def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        body = urlencode(form).encode() if form is not None else b""
        raw = [("host", HOST), *headers]
        if form is not None:
            raw.append(("content-type", "application/x-www-form-urlencoded"))
        if self.cookies:
            raw.append(("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        path_part, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": self.scheme,
            "path": path_part,
            "raw_path": path_part.encode(),
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in raw],
            "client": (self.client, 40000),
            "server": ("127.0.0.1", 8000),
            "root_path": "",
        }
        sent: list[dict[str, Any]] = []
        chunks = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start = sent[0]
        headers_out = [(k.decode().lower(), v.decode()) for k, v in start["headers"]]
        for key, value in headers_out:
            if key == "set-cookie":
                cookie: SimpleCookie = SimpleCookie()
                cookie.load(value)
                for name, morsel in cookie.items():
                    self.cookies[name] = morsel.value
        text = b"".join(m.get("body", b"") for m in sent[1:]).decode()
        return Reply(start["status"], headers_out, text)

    async def sign_in(self, token: str = TOKEN, **extra: str) -> Reply:
        return await self.request(
            "POST", "/signin", form={"token": token, **extra}, headers=[("origin", ORIGIN)]
        )

    async def csrf(self) -> str:
        """The session's CSRF token, read from the cookie's payload (signed, not encrypted:
        which is why it never holds the admin token)."""
        payload = self.cookies[SESSION_COOKIE].split(".")[0]
        return str(json.loads(base64.b64decode(payload))["csrf"])


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_on_a_loopback_bind_read_only_pages_are_open(clock: Clock) -> None:
    app, _ = console_app(clock=clock)
    browser = Browser(app)
    assert (await browser.request("GET", "/workers")).status == 200
    assert (await browser.request("GET", "/fragments/workers")).status == 200


async def test_off_loopback_a_page_sends_to_the_sign_in_and_a_fragment_gets_401(
    clock: Clock,
) -> None:
    app, _ = console_app(host="0.0.0.0", clock=clock)
    browser = Browser(app)
    reply = await browser.request("GET", "/workers")
    assert reply.status == 303
    assert reply.header("location") == "/signin?next=/workers"
    reply = await browser.request("GET", "/fragments/workers", headers=[("hx-request", "true")])
    assert reply.status == 401
    assert reply.header("hx-redirect") == "/signin"
    assert (await browser.sign_in()).status == 303
    assert (await browser.request("GET", "/workers")).status == 200
    assert (await browser.request("GET", "/fragments/workers")).status == 200


async def test_an_action_needs_the_sign_in(clock: Clock) -> None:
    app, _ = console_app(clock=clock)
    reply = await Browser(app).request(
        "POST", "/act", form={"csrf_token": "anything"}, headers=[("origin", ORIGIN)]
    )
    assert reply.status == 401


async def test_an_action_without_or_with_a_wrong_csrf_token_is_403(clock: Clock) -> None:
    app, _ = console_app(clock=clock)
    browser = Browser(app)
    await browser.sign_in()
    same = [("origin", ORIGIN)]
    assert (await browser.request("POST", "/act", form={}, headers=same)).status == 403
    wrong = {"csrf_token": "not-the-token"}
    assert (await browser.request("POST", "/act", form=wrong, headers=same)).status == 403
    header = [*same, ("x-csrf-token", "not-the-token")]
    assert (await browser.request("POST", "/act", form={}, headers=header)).status == 403


async def test_an_action_with_the_csrf_token_in_the_form_or_the_header_passes(
    clock: Clock,
) -> None:
    app, _ = console_app(clock=clock)
    browser = Browser(app)
    await browser.sign_in()
    csrf = await browser.csrf()
    same = [("origin", ORIGIN)]
    reply = await browser.request(
        "POST", "/act", form={"csrf_token": csrf, "value": "a"}, headers=same
    )
    assert (reply.status, reply.body) == (200, "done a")
    header = [*same, ("x-csrf-token", csrf)]
    reply = await browser.request("POST", "/act", form={"value": "b"}, headers=header)
    assert (reply.status, reply.body) == (200, "done b")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("origin", "http://evil.example")], 403),
        ([("origin", "null")], 403),
        ([("origin", "https://console.test:8000")], 403),  # another scheme is another origin
        ([("referer", "http://evil.example/page")], 403),
        ([("referer", f"{ORIGIN}/workers")], 200),
        ([("origin", ORIGIN), ("referer", "http://evil.example/")], 200),  # Origin decides
        ([], 200),  # not a browser: the cookie and the CSRF token still had to match
    ],
)
async def test_cross_origin_actions_are_403(
    clock: Clock, headers: list[tuple[str, str]], status: int
) -> None:
    app, _ = console_app(clock=clock)
    browser = Browser(app)
    await browser.sign_in()
    csrf = await browser.csrf()
    reply = await browser.request("POST", "/act", form={"csrf_token": csrf}, headers=headers)
    assert reply.status == status


async def test_wrong_tokens_are_rate_limited_per_client(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Five wrong tokens a minute, then 429 with Retry-After even for the right token; other
    addresses are unaffected; after the window the right token works. The token is never
    logged."""
    app, state = console_app(clock=clock)
    attacker = Browser(app, client="203.0.113.9")
    caplog.set_level(logging.INFO)
    for attempt in range(5):
        reply = await attacker.sign_in(f"guess-{attempt}")
        assert reply.status == 401
        assert "That is not the admin token." in reply.body
    clock.now += 10
    limited = await attacker.sign_in(TOKEN)
    assert limited.status == 429
    assert limited.header("retry-after") == "50"
    assert SESSION_COOKIE not in attacker.cookies
    assert (await Browser(app, client="198.51.100.1").sign_in()).status == 303
    clock.now += 51
    assert (await attacker.sign_in()).status == 303
    assert state.metrics.signin_failures_total._value.get() == 5
    rendered = state.metrics.render().decode()
    assert 'duplex_console_actions_total{action="signin",outcome="rate_limited"} 1.0' in rendered
    assert "guess-" not in caplog.text and TOKEN not in caplog.text and TOKEN not in rendered


async def test_sign_in_starts_a_fresh_session(clock: Clock) -> None:
    """Whatever the session held before (a planted CSRF token) is gone after the sign-in."""
    app, _ = console_app(clock=clock)
    browser = Browser(app)
    await browser.request("GET", "/signin")
    before = dict(browser.cookies)
    await browser.sign_in()
    assert browser.cookies[SESSION_COOKIE] != before.get(SESSION_COOKIE)
    first = await browser.csrf()
    await browser.sign_in()
    assert await browser.csrf() != first


async def test_a_new_admin_token_ends_old_sessions(clock: Clock) -> None:
    """The cookie holds a fingerprint of the token: signed with the same secret, a session
    from before a token change is no longer signed in."""
    old_app, _ = console_app(token="old-token", clock=clock)
    browser = Browser(old_app)
    await browser.sign_in("old-token")
    csrf = await browser.csrf()
    new_app, _ = console_app(token="new-token", clock=clock)
    moved = Browser(new_app, cookies=dict(browser.cookies))
    reply = await moved.request(
        "POST", "/act", form={"csrf_token": csrf}, headers=[("origin", ORIGIN)]
    )
    assert reply.status == 401


async def test_without_an_admin_token_nobody_signs_in(clock: Clock) -> None:
    app, _ = console_app(token="", clock=clock)
    browser = Browser(app)
    reply = await browser.sign_in("")
    assert reply.status == 403
    assert "CONSOLE_ADMIN_TOKEN" in reply.body
    assert (await browser.request("POST", "/act", form={})).status == 401


async def test_a_cross_origin_sign_in_is_refused(clock: Clock) -> None:
    app, _ = console_app(clock=clock)
    browser = Browser(app)
    reply = await browser.request(
        "POST", "/signin", form={"token": TOKEN}, headers=[("origin", "http://evil.example")]
    )
    assert reply.status == 403
    assert SESSION_COOKIE not in browser.cookies


@pytest.mark.parametrize(
    ("next_path", "location"),
    [
        ("/gpus", "/gpus"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("gpus", "/"),
    ],
)
async def test_after_sign_in_only_a_local_path_is_followed(
    clock: Clock, next_path: str, location: str
) -> None:
    app, _ = console_app(clock=clock)
    reply = await Browser(app).sign_in(next=next_path)
    assert reply.status == 303
    assert reply.header("location") == location


@pytest.mark.parametrize(("scheme", "secure"), [("http", False), ("https", True)])
async def test_the_session_cookie_is_httponly_strict_and_secure_over_https(
    clock: Clock, scheme: str, secure: bool
) -> None:
    app, _ = console_app(clock=clock)
    reply = await Browser(app, scheme=scheme).request(
        "POST", "/signin", form={"token": TOKEN}, headers=[("origin", f"{scheme}://{HOST}")]
    )
    assert reply.status == 303
    cookie = reply.header("set-cookie") or ""
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "httponly" in flags and "samesite=strict" in flags
    assert ("secure" in flags) is secure
    assert TOKEN not in cookie


async def test_sign_out_needs_csrf_and_ends_the_session(clock: Clock) -> None:
    app, _ = console_app(clock=clock)
    browser = Browser(app)
    await browser.sign_in()
    csrf = await browser.csrf()
    same = [("origin", ORIGIN)]
    assert (await browser.request("POST", "/signout", form={}, headers=same)).status == 403
    reply = await browser.request("POST", "/signout", form={"csrf_token": csrf}, headers=same)
    assert reply.status == 303
    again = await browser.request("POST", "/act", form={"csrf_token": csrf}, headers=same)
    assert again.status == 401


def test_the_limiter_forgets_old_failures_and_stays_bounded() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=2, window_s=10, max_clients=3, clock=clock)
    limiter.failed("a")
    assert limiter.retry_after("a") == 0
    limiter.failed("a")
    assert limiter.retry_after("a") == pytest.approx(10)
    clock.now += 4
    assert limiter.retry_after("a") == pytest.approx(6)
    clock.now += 7
    assert limiter.retry_after("a") == 0
    for n in range(10):
        limiter.failed(f"client-{n}")
    assert len(limiter) == 3
