"""Client API keys for the client APIs (WebSocket, WebRTC signalling, the agent's channel,
the model list, the OpenAI-compatible `/v1/`): an ASGI middleware, so no endpoint can forget it.

A client on loopback needs no key (unless `auth.require_on_loopback`); any other client
must present one of `API_KEYS` as `Authorization: Bearer <key>` or `?key=<key>` (browsers
cannot set headers on a WebSocket). A key that is presented is always checked. With no
key configured, only loopback clients are served, and the refusal says how to set one.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Sequence
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from duplex.orchestrator.config import AuthConfig
from duplex.orchestrator.protocol import Error, ErrorCode

# Paths of the client APIs; the page, its assets, health, readiness and metrics are open.
PROTECTED_PREFIXES: tuple[str, ...] = ("/offer", "/whip", "/sessions/", "/api/", "/v1/")
# The OpenAI-compatible API answers in OpenAI's error shape, so its SDKs read the reason.
_OPENAI_PREFIX = "/v1/"
_CLOSE_POLICY = 1008


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _presented_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text = bytes(value).decode("latin-1")
            if text.lower().startswith("bearer "):
                return text[7:].strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    keys: list[str] = query.get("key", [])
    return keys[0] if keys else None


def refusal(config: AuthConfig, scope: Scope) -> str | None:
    """Why this request may not use a client API, or None when it may."""
    keys: Sequence[str] = config.api_keys
    presented = _presented_key(scope)
    client = scope.get("client")
    loopback = _is_loopback(client[0] if client else None)
    if presented is not None and keys:
        ok = any(hmac.compare_digest(presented.encode(), k.encode()) for k in keys)
        return None if ok else "the API key is not valid"
    if loopback and not config.require_on_loopback:
        return None
    if not keys:
        return (
            "this orchestrator serves clients off its own machine only with an API key; "
            "set API_KEYS=<key>[,<key>...] and send it as Authorization: Bearer <key> or ?key="
        )
    return "an API key is required: send Authorization: Bearer <key> or add ?key=<key>"


class ApiKeyMiddleware:
    """Refuses client API requests without a valid key: HTTP 401, or for a WebSocket
    `Error UNAUTHORIZED` and close 1008 (so the client reads why)."""

    def __init__(self, app: ASGIApp, config: AuthConfig) -> None:
        self._app = app
        self._config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._protected(scope):
            await self._app(scope, receive, send)
            return
        why = refusal(self._config, scope)
        if why is None:
            await self._app(scope, receive, send)
            return
        if scope["type"] == "http":
            error: dict[str, object] = {"code": ErrorCode.UNAUTHORIZED.value, "message": why}
            if scope.get("path", "").startswith(_OPENAI_PREFIX):
                error = {"message": why, "type": "invalid_request_error", "param": None,
                         "code": "invalid_api_key"}  # fmt: skip
            body = json.dumps({"error": error})
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b"Bearer"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body.encode()})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": Error(ErrorCode.UNAUTHORIZED, why).to_json()})
        await send({"type": "websocket.close", "code": _CLOSE_POLICY})

    def _protected(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if scope["type"] == "websocket":
            return True  # "/" and the agent's channel
        return path.startswith(PROTECTED_PREFIXES)
