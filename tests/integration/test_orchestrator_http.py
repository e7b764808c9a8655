"""The orchestrator's HTTP side on a real uvicorn: /health, /ready, /metrics, start and stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from duplex.asgiserver import ServerStartError
from duplex.devtools.redis_server import free_port
from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import OrchestratorConfig
from duplex.registry.admin import RegistryAdmin
from duplex.registry.announcer import Announcer
from duplex.registry.records import Capabilities, WorkerMetrics, WorkerRecord
from websockets.asyncio.client import connect

DEADLINE_S = 10.0
REPO = Path(__file__).resolve().parents[2]


def make_config(redis_url: str) -> OrchestratorConfig:
    base = OrchestratorConfig()
    ws = replace(base.transport.websocket, host="127.0.0.1", port=0)
    return replace(
        base,
        transport=replace(base.transport, websocket=ws),
        redis=replace(base.redis, url=redis_url, reconcile_interval_ms=200),
    )


async def http_get(url: str, path: str) -> tuple[int, str, bytes]:
    """A plain HTTP/1.1 GET over a socket: (status, content-type, body)."""
    host, port = url.removeprefix("http://").split(":")
    async with asyncio.timeout(DEADLINE_S):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("content-type", ""), body


def worker_record(name: str) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr="grpc://127.0.0.1:9",
        adapter_type="tone",
        capabilities=Capabilities(languages=("en",)),
        resident_models=("tone-en",),
        available_models=("tone-en",),
        metrics=WorkerMetrics(),
        last_heartbeat=time.time(),
    )


@pytest.fixture
async def server(redis_url: str) -> AsyncIterator[OrchestratorServer]:
    orchestrator = OrchestratorServer(make_config(redis_url))
    await orchestrator.start()
    yield orchestrator
    await orchestrator.stop()


async def test_health_is_ok(server: OrchestratorServer) -> None:
    """GET /health answers 200 {"status": "ok"} as soon as the server is up."""
    status, ctype, body = await http_get(server.http_url, "/health")
    assert status == 200
    assert ctype.startswith("application/json")
    assert json.loads(body) == {"status": "ok"}


async def test_ready_is_503_without_workers_then_200_once_one_announces(
    server: OrchestratorServer, redis_url: str
) -> None:
    """/ready says why it is not ready (no worker), then turns 200 when a worker appears."""
    status, _, body = await http_get(server.http_url, "/ready")
    assert status == 503
    data = json.loads(body)
    assert data["redis"] is True and data["workers"] == 0
    assert "worker" in data["reason"]

    announcer = Announcer(redis_url, lambda: worker_record("w@0"), interval_s=1.0, ttl_s=5.0)
    await announcer.announce()
    try:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                status, _, body = await http_get(server.http_url, "/ready")
                if status == 200:
                    break
                await asyncio.sleep(0.05)
        assert status == 200
        assert json.loads(body)["workers"] == 1
    finally:
        await announcer.deregister()
        await announcer.close()


async def test_ready_is_503_when_only_drained_workers_are_live(
    server: OrchestratorServer, redis_url: str
) -> None:
    """A live worker that is drained does not make the orchestrator ready."""
    announcer = Announcer(redis_url, lambda: worker_record("w@0"), interval_s=1.0, ttl_s=5.0)
    async with RegistryAdmin(redis_url) as admin:
        await admin.drain("w@0")
        await announcer.announce()
        try:
            async with asyncio.timeout(DEADLINE_S):
                while True:
                    status, _, body = await http_get(server.http_url, "/ready")
                    if json.loads(body).get("drained") == 1:
                        break
                    await asyncio.sleep(0.05)
            assert status == 503
            assert json.loads(body)["workers"] == 0
        finally:
            await announcer.deregister()
            await announcer.close()


async def test_ready_is_503_naming_redis_when_redis_is_unreachable() -> None:
    """With no Redis at the configured URL, /ready is 503 and says Redis is unreachable."""
    config = make_config(f"redis://127.0.0.1:{free_port()}")
    async with OrchestratorServer(config) as orchestrator:
        status, _, body = await http_get(orchestrator.http_url, "/ready")
        health, _, _ = await http_get(orchestrator.http_url, "/health")
    assert status == 503
    assert "Redis" in json.loads(body)["reason"]
    assert health == 200


async def test_metrics_is_prometheus_text_with_orchestrator_metrics(
    server: OrchestratorServer,
) -> None:
    """/metrics serves the Prometheus text format with the orchestrator's metric names."""
    async with connect(server.url, proxy=None, open_timeout=DEADLINE_S) as ws:
        await ws.send("not json")
        await asyncio.wait_for(ws.recv(), DEADLINE_S)
    status, ctype, body = await http_get(server.http_url, "/metrics")
    text = body.decode()
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    for family, kind in (
        ("duplex_orch_sessions_active", "gauge"),
        ("duplex_orch_sessions_total", "counter"),
        ("duplex_orch_first_audio_seconds", "histogram"),
        ("duplex_orch_routing_decisions_total", "counter"),
        ("duplex_orch_routing_decision_seconds", "histogram"),
        ("duplex_orch_failovers_total", "counter"),
        ("duplex_orch_worker_errors_total", "counter"),
        ("duplex_orch_frames_sent_total", "counter"),
        ("duplex_orch_frame_send_lateness_seconds", "histogram"),
        ("duplex_orch_protocol_errors_total", "counter"),
        ("duplex_orch_ws_connections_rejected_total", "counter"),
    ):
        assert f"# TYPE {family} {kind}\n" in text, family
    assert 'duplex_orch_protocol_errors_total{code="INVALID_MESSAGE"} 1.0' in text


async def test_two_servers_in_one_process_keep_separate_metrics(redis_url: str) -> None:
    """Each app has its own registry: two servers in one process do not clash."""
    async with (
        OrchestratorServer(make_config(redis_url)) as a,
        OrchestratorServer(make_config(redis_url)) as b,
    ):
        assert a.port != b.port
        async with connect(a.url, proxy=None, open_timeout=DEADLINE_S) as ws:
            await ws.send("{")
            await asyncio.wait_for(ws.recv(), DEADLINE_S)
        _, _, body_a = await http_get(a.http_url, "/metrics")
        _, _, body_b = await http_get(b.http_url, "/metrics")
    assert b'code="INVALID_MESSAGE"' in body_a
    assert b'code="INVALID_MESSAGE"' not in body_b


async def test_port_zero_binds_a_free_port_and_a_taken_port_fails_to_start(
    server: OrchestratorServer, redis_url: str
) -> None:
    """Port 0 reports the bound port; starting a second server on it raises ServerStartError."""
    assert server.port > 0
    clash = OrchestratorServer(make_config(redis_url), port=server.port)
    with pytest.raises(ServerStartError):
        await clash.start()
    await clash.stop()


async def test_stop_ends_live_sessions_with_session_ended_shutdown(
    server: OrchestratorServer,
) -> None:
    """A graceful stop sends SessionEnded {reason: shutdown} and closes with 1001."""
    async with connect(server.url, proxy=None, open_timeout=DEADLINE_S) as ws:
        await ws.send("{}")  # any message: the connection is registered and waiting
        await asyncio.wait_for(ws.recv(), DEADLINE_S)
        await server.stop()
        ended = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))
        await asyncio.wait_for(ws.wait_closed(), DEADLINE_S)
    assert ended == {"type": "SessionEnded", "reason": "shutdown"}
    assert ws.close_code == 1001


async def test_cli_process_serves_and_stops_cleanly_on_sigterm(redis_url: str) -> None:
    """`python -m duplex.orchestrator` serves /health, logs JSON lines, exits 0 on SIGTERM."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "DUPLEX_ORCH_HOST": "127.0.0.1"}
    env["DUPLEX_ORCH_PORT"] = str(port)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duplex.orchestrator",
        "--config",
        str(REPO / "config" / "orchestrator.yaml"),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(30):
            while True:
                try:
                    status, _, _ = await http_get(url, "/health")
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        assert status == 200
        async with connect(f"ws://127.0.0.1:{port}", proxy=None) as ws:
            await ws.send("{}")
            await asyncio.wait_for(ws.recv(), DEADLINE_S)
            process.send_signal(signal.SIGTERM)
            ended = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))
        assert ended == {"type": "SessionEnded", "reason": "shutdown"}
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    lines = (await process.stderr.read()).decode().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r["msg"] == "serving" and r["url"] == f"ws://127.0.0.1:{port}" for r in records)
    assert any(r["msg"] == "orchestrator stopped" for r in records)


def test_cli_help_and_bad_config_exit_codes(tmp_path: Path) -> None:
    """--help exits 0 naming --config; an unknown config key exits 2 naming the key."""
    run = [sys.executable, "-m", "duplex.orchestrator"]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert "--config" in shown.stdout and "REDIS_URL" in shown.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("transport:\n  websockets: {}\n")
    failed = subprocess.run(
        [*run, "--config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 2
    assert "transport.websockets" in failed.stderr
