"""Client API keys on the real server: the client APIs refuse a missing or wrong key with a
clear reason (HTTP 401, or Error UNAUTHORIZED and close 1008 on a WebSocket); health,
readiness, metrics and the page stay open.

The server runs on loopback, where keys are not needed by default, so these tests set
`auth.require_on_loopback` (what an operator sets behind a reverse proxy on the same host).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import AuthConfig
from websockets.asyncio.client import connect

from tests.integration.orchestrator_fixtures import orch_config, running_orchestrator

KEY = "k-3f9a"


@pytest.fixture
async def orch(redis_url: str) -> AsyncIterator[OrchestratorServer]:
    config = replace(
        orch_config(redis_url), auth=AuthConfig(api_keys=(KEY,), require_on_loopback=True)
    )
    async with running_orchestrator(config) as server:
        yield server


def status(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=None)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        assert body["error"]["code"] == "UNAUTHORIZED" and body["error"]["message"]
        return int(exc.code)


async def test_http_client_apis_need_a_key_and_take_it_as_bearer_or_query(
    orch: OrchestratorServer,
) -> None:
    """/api/models and the WebRTC signalling answer 401 without a key or with a wrong one;
    the right key works as a Bearer header or ?key=; operations endpoints need none."""
    base = orch.http_url
    assert await asyncio.to_thread(status, base + "/api/models") == 401
    assert await asyncio.to_thread(status, base + "/offer", method="POST") == 401
    assert await asyncio.to_thread(status, base + "/api/models?key=wrong") == 401
    assert await asyncio.to_thread(status, base + f"/api/models?key={KEY}") == 200
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert await asyncio.to_thread(status, base + "/api/models", headers=bearer) == 200
    for open_path in ("/health", "/metrics", "/"):
        assert await asyncio.to_thread(status, base + open_path) == 200


async def test_a_websocket_without_a_key_is_told_why_and_closed(orch: OrchestratorServer) -> None:
    """No key: Error UNAUTHORIZED naming how to send one, then close 1008. With ?key= the
    session starts (the key is checked, not the route)."""
    async with connect(orch.url, proxy=None) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["type"] == "Error" and error["code"] == "UNAUTHORIZED"
        assert "Bearer" in error["message"]
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1008
    async with connect(orch.url + f"/?key={KEY}", proxy=None) as ws:
        await ws.send(json.dumps({"type": "TextChunk", "text": "hi"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["code"] == "NOT_STARTED"  # past the key check, into the protocol


async def test_without_configured_keys_off_machine_clients_are_told_to_set_one(
    redis_url: str,
) -> None:
    """No API_KEYS and keys required: the refusal says how to set API_KEYS."""
    config = replace(orch_config(redis_url), auth=AuthConfig(require_on_loopback=True))
    async with running_orchestrator(config) as orch, connect(orch.url, proxy=None) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["code"] == "UNAUTHORIZED" and "API_KEYS" in error["message"]


async def test_loopback_clients_need_no_key_by_default(redis_url: str) -> None:
    """The default: a loopback client is served without a key."""
    async with running_orchestrator(orch_config(redis_url)) as orch:
        assert await asyncio.to_thread(status, orch.http_url + "/api/models") == 200
