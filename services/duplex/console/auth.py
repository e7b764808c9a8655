"""Who may see and who may steer: the admin sign-in, the session cookie, CSRF and origin checks.

- An operator signs in once with the admin token (`POST /signin`, compared in constant time)
  and gets a signed session cookie (HttpOnly, SameSite=Strict, Secure when served over HTTPS).
  The cookie holds a keyed fingerprint of the token, never the token, so a new token ends
  every old session.
- Every state-changing request calls :func:`require_admin_action`: signed in (else 401), the
  session's CSRF token in the form field `csrf_token` or the `X-CSRF-Token` header (else 403),
  and same-origin by `Origin`, or `Referer` when there is no `Origin` (else 403). A request
  with neither header (not a browser) still needs the cookie and the CSRF token.
- Read-only pages call :func:`require_reader`: open on a loopback bind (as in the demo),
  otherwise they need the sign-in too. `/health`, `/metrics` and `/static` are always open.
- Wrong tokens are rate-limited per client address (then 429 with Retry-After).

No secret is logged, rendered or used as a metric label.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from duplex.console.config import ConsoleConfig
from duplex.console.state import ConsoleState, state_of

_LOG = logging.getLogger(__name__)

SESSION_COOKIE = "duplex_console"
SESSION_MAX_AGE_S = 12 * 3600  # an operator's working day; then sign in again
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_ADMIN_KEY = "admin"
_CSRF_KEY = "csrf"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class SessionCookieMiddleware:
    """Starlette's SessionMiddleware with the Secure flag exactly when the request came over
    HTTPS (uvicorn sets the scheme from a trusted proxy's X-Forwarded-Proto too), so the
    same console works on plain loopback HTTP and behind TLS."""

    def __init__(self, app: ASGIApp, *, secret_key: str) -> None:
        common: dict[str, Any] = {
            "secret_key": secret_key,
            "session_cookie": SESSION_COOKIE,
            "max_age": SESSION_MAX_AGE_S,
            "same_site": "strict",
        }
        self._plain = SessionMiddleware(app, https_only=False, **common)
        self._secure = SessionMiddleware(app, https_only=True, **common)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        secure = scope.get("scheme") in ("https", "wss")
        await (self._secure if secure else self._plain)(scope, receive, send)


def admin_fingerprint(config: ConsoleConfig) -> str:
    """What a signed-in session holds: the admin token keyed by the session secret (the
    cookie is signed, not encrypted, so the token itself must not be in it)."""
    key = config.console.session_secret.encode()
    digest = hmac.new(key, config.console.admin_token.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def signed_in(request: Request) -> bool:
    """The request carries a session signed in with the current admin token."""
    state = state_of(request)
    if not state.config.console.admin_token:
        return False
    held = request.session.get(_ADMIN_KEY)
    return isinstance(held, str) and hmac.compare_digest(held, admin_fingerprint(state.config))


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use); forms and HTMX send it back."""
    token = request.session.get(_CSRF_KEY)
    if not isinstance(token, str) or not token:
        token = request.session[_CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def _is_fragment(request: Request) -> bool:
    return "hx-request" in request.headers or request.url.path.startswith("/fragments/")


async def require_reader(request: Request) -> None:
    """Read-only pages: open on a loopback bind, otherwise signed in only (a page is sent to
    the sign-in with a 303; a fragment gets 401 and an `HX-Redirect` to it)."""
    if state_of(request).config.console.loopback or signed_in(request):
        return
    target = "/signin?next=" + quote(request.url.path, safe="/")
    if _is_fragment(request):
        raise HTTPException(401, "sign in first", headers={"HX-Redirect": "/signin"})
    raise HTTPException(303, "sign in first", headers={"Location": target})


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request) -> bool:
    """`Origin` (or, without it, `Referer`) names this console; True when neither is sent."""
    own = f"{request.url.scheme}://{request.url.netloc}".lower()
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() == own  # "null" (a sandboxed or privacy-stripped origin) fails
    referer = request.headers.get("referer")
    if referer is not None:
        return _origin_of(referer) == own
    return True


async def _presented_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(_FORM_TYPES):
        form = await request.form()  # cached on the request: the handler reads it again
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def require_admin_action(request: Request) -> None:
    """For every state-changing request: raises starlette HTTPException 401 when not signed
    in, 403 when the CSRF token (form field `csrf_token` or header `X-CSRF-Token`) is missing
    or wrong, 403 when the request is cross-origin (Origin, or Referer, not this host)."""
    if not signed_in(request):
        raise HTTPException(401, "sign in with the admin token first")
    expected = request.session.get(_CSRF_KEY)
    presented = await _presented_csrf(request)
    if (
        not isinstance(expected, str)
        or not expected
        or presented is None
        or not hmac.compare_digest(presented.encode(), expected.encode())
    ):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    if not same_origin(request):
        raise HTTPException(403, "cross-origin request refused")


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _safe_next(raw: object) -> str:
    """Only a path on this console (never "//host" or "https://..."): no open redirect."""
    text = raw if isinstance(raw, str) else ""
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/"
    return str(URL(text).path) or "/"


def _signin_page(request: Request, status: int, message: str = "", **extra: str) -> Response:
    state = state_of(request)
    context: dict[str, Any] = {
        "message": message,
        "next": _safe_next(request.query_params.get("next", "/")),
        "token_set": bool(state.config.console.admin_token),
        "loopback": state.config.console.loopback,
    }
    return state.templates.TemplateResponse(
        request, "signin.html", context, status_code=status, headers=extra or None
    )


async def signin_form(request: Request) -> Response:
    if signed_in(request):
        return RedirectResponse(_safe_next(request.query_params.get("next", "/")), 303)
    return _signin_page(request, 200)


async def signin(request: Request) -> Response:
    state: ConsoleState = state_of(request)
    count = state.metrics.actions_total
    if not same_origin(request):
        count.labels(action="signin", outcome="cross_origin").inc()
        raise HTTPException(403, "cross-origin request refused")
    client = _client(request)
    wait_s = state.signin_limiter.retry_after(client)
    if wait_s > 0:
        count.labels(action="signin", outcome="rate_limited").inc()
        retry = str(max(1, math.ceil(wait_s)))
        message = f"Too many wrong tokens from this address: try again in {retry} s."
        return _signin_page(request, 429, message, **{"Retry-After": retry})
    admin_token = state.config.console.admin_token
    if not admin_token:
        count.labels(action="signin", outcome="no_token_configured").inc()
        message = "No admin token is configured: set CONSOLE_ADMIN_TOKEN and restart."
        return _signin_page(request, 403, message)
    form = await request.form()
    presented = form.get("token")
    text = presented if isinstance(presented, str) else ""
    if not hmac.compare_digest(text.strip().encode(), admin_token.encode()):
        state.signin_limiter.failed(client)
        state.metrics.signin_failures_total.inc()
        count.labels(action="signin", outcome="wrong_token").inc()
        _LOG.warning("sign-in refused: wrong admin token", extra={"client": client})
        return _signin_page(request, 401, "That is not the admin token.")
    # A fresh session on sign-in: nothing set before it (a planted CSRF token) survives.
    request.session.clear()
    request.session[_ADMIN_KEY] = admin_fingerprint(state.config)
    request.session[_CSRF_KEY] = secrets.token_urlsafe(32)
    count.labels(action="signin", outcome="ok").inc()
    _LOG.info("operator signed in", extra={"client": client})
    return RedirectResponse(_safe_next(form.get("next", "/")), 303)


async def signout(request: Request) -> Response:
    await require_admin_action(request)
    request.session.clear()
    state_of(request).metrics.actions_total.labels(action="signout", outcome="ok").inc()
    _LOG.info("operator signed out", extra={"client": _client(request)})
    return RedirectResponse("/", 303)


def auth_routes() -> list[BaseRoute]:
    """`GET/POST /signin`, `POST /signout`."""
    return [
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
    ]
