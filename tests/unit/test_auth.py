"""Who may use the client APIs (`auth.refusal`), by client address and presented key."""

from __future__ import annotations

from typing import Any

from duplex.orchestrator.auth import refusal
from duplex.orchestrator.config import AuthConfig


def scope(client: str, *, header: str | None = None, query: str = "") -> dict[str, Any]:
    headers = [(b"authorization", header.encode())] if header else []
    return {"client": (client, 5555), "headers": headers, "query_string": query.encode()}


def test_a_remote_client_needs_a_valid_key() -> None:
    """Off the machine: no key or a wrong key is refused; Bearer or ?key= is accepted."""
    config = AuthConfig(api_keys=("a", "b"))
    assert "required" in (refusal(config, scope("10.1.2.3")) or "")
    assert refusal(config, scope("10.1.2.3", query="key=zzz")) == "the API key is not valid"
    assert refusal(config, scope("10.1.2.3", header="Bearer b")) is None
    assert refusal(config, scope("10.1.2.3", query="key=a")) is None


def test_a_remote_client_is_refused_when_no_key_is_configured() -> None:
    """No API_KEYS: only loopback clients; the reason says how to set a key."""
    why = refusal(AuthConfig(), scope("192.168.1.20"))
    assert why is not None and "API_KEYS" in why
    assert refusal(AuthConfig(), scope("127.0.0.1")) is None
    assert refusal(AuthConfig(), scope("::1")) is None


def test_a_key_presented_on_loopback_is_still_checked() -> None:
    """A loopback client needs no key, but a wrong one it sends is refused."""
    config = AuthConfig(api_keys=("a",))
    assert refusal(config, scope("127.0.0.1")) is None
    assert refusal(config, scope("127.0.0.1", query="key=nope")) == "the API key is not valid"
