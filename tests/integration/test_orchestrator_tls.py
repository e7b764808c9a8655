"""HTTPS and WSS on tls.port beside plain HTTP: the same app, the same sessions."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from dataclasses import replace
from pathlib import Path

from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import TlsConfig
from duplex.orchestrator.tls import ensure_self_signed
from websockets.asyncio.client import connect

from tests.integration.orchestrator_fixtures import orch_config, wait_for_workers
from tests.integration.worker_fixtures import running_worker, worker_config


async def test_the_page_and_sessions_are_served_over_https_and_wss(
    redis_url: str, tmp_path: Path
) -> None:
    """With a certificate, GET / answers over HTTPS and a session runs over WSS on the TLS
    port, while plain HTTP keeps answering the guide's clients and health checks."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["localhost", "127.0.0.1"])
    config = replace(
        orch_config(redis_url), tls=TlsConfig(port=0, cert_file=str(cert), key_file=str(key))
    )
    trust = ssl.create_default_context(cafile=str(cert))
    async with (
        running_worker(worker_config(redis_url, name="w1")),
        OrchestratorServer(config) as orch,
    ):
        await wait_for_workers(orch, {"w1"})
        assert orch.tls_port is not None and orch.tls_port != orch.port
        base = f"https://127.0.0.1:{orch.tls_port}"
        page = await asyncio.to_thread(_get, base + "/", trust)
        assert "<html" in page.lower()
        health = await asyncio.to_thread(_get, orch.http_url + "/health", None)
        assert json.loads(health) == {"status": "ok"}
        async with connect(f"wss://127.0.0.1:{orch.tls_port}/", ssl=trust, proxy=None) as ws:
            await ws.send(json.dumps({"type": "SessionStart", "model_id": "tone-fast"}))
            started = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert started["type"] == "SessionStarted" and started["worker"] == "w1"
            await ws.send(json.dumps({"type": "TextChunk", "text": "Hi.", "is_final": True}))
            kinds = []
            async with asyncio.timeout(10):
                while "AudioEnd" not in kinds:
                    raw = await ws.recv()
                    kinds.append("frame" if isinstance(raw, bytes) else json.loads(raw)["type"])
            assert kinds.count("frame") > 0


def test_without_a_certificate_there_is_no_tls_port() -> None:
    """No cert_file: one plain server only."""
    assert OrchestratorServer(orch_config("redis://127.0.0.1:1")).tls_port is None


def _get(url: str, context: ssl.SSLContext | None) -> str:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return str(response.read().decode())
