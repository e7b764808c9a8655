"""The worker heartbeat against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from duplex.devtools.redis_server import RedisProcess, free_port
from duplex.registry import keys
from duplex.registry.announcer import Announcer
from duplex.registry.records import Capabilities, WorkerMetrics, WorkerRecord

INTERVAL_S = 0.2
TTL_S = 1.0
SLOW_INTERVAL_S = 1.0
SLOW_TTL_S = 3.0
GUIDE_FIELDS = {
    "name",
    "addr",
    "adapter_type",
    "capabilities",
    "resident_models",
    "metrics",
    "last_heartbeat",
}


class Beats:
    """A snapshot callable that counts its calls and reports a growing queue depth."""

    def __init__(self, name: str = "gpu0") -> None:
        self.calls = 0
        self.base = WorkerRecord(
            name=name,
            addr="grpc://127.0.0.1:7001",
            adapter_type="piper",
            capabilities=Capabilities(languages=("en",)),
            resident_models=("piper-en-joe",),
            available_models=("piper-en-joe", "tone"),
            metrics=WorkerMetrics(),
            last_heartbeat=0.0,
        )

    def __call__(self) -> WorkerRecord:
        self.calls += 1
        return replace(
            self.base,
            metrics=WorkerMetrics(queue_depth=self.calls, active_sessions=1, rtf=0.05),
            last_heartbeat=time.time(),
        )


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    yield c
    await c.aclose()


async def hash_of(client: aioredis.Redis, name: str = "gpu0") -> dict[str, str]:
    return {str(k): str(v) for k, v in (await client.hgetall(keys.worker_key(name))).items()}


async def until_exists(client: aioredis.Redis, exists: bool = True, within: float = 5.0) -> float:
    """Poll Redis until worker:gpu0 exists (or is gone); return the seconds it took."""
    start = time.monotonic()
    while bool(await client.exists("worker:gpu0")) != exists:
        assert time.monotonic() - start < within, "worker:gpu0 did not change in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def running(announcer: Announcer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(announcer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await announcer.close()


async def eventually(check: Callable[[], object], within: float = 5.0) -> None:
    """Poll until check() is true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_hash_has_the_guides_fields_a_ttl_and_an_index_entry(
    redis_url: str, client: aioredis.Redis
) -> None:
    """One heartbeat writes every guide field, a TTL of ~ttl, and the live index entry."""
    beats = Beats()
    announcer = Announcer(redis_url, beats, interval_s=INTERVAL_S, ttl_s=TTL_S)
    await announcer.announce()
    await announcer.close()
    fields = await hash_of(client)
    assert set(fields) >= GUIDE_FIELDS
    record = WorkerRecord.decode(fields)
    assert record.addr == "grpc://127.0.0.1:7001"
    assert record.capabilities.languages == ("en",)
    assert 0 < await client.pttl("worker:gpu0") <= TTL_S * 1000
    assert await client.zscore(keys.LIVE_INDEX, "gpu0") == pytest.approx(record.last_heartbeat)


async def test_heartbeats_refresh_last_heartbeat_metrics_and_ttl(
    redis_url: str, client: aioredis.Redis
) -> None:
    """Each heartbeat takes a fresh snapshot: metrics and last_heartbeat move, the TTL renews."""
    beats = Beats()
    async with running(Announcer(redis_url, beats, interval_s=INTERVAL_S, ttl_s=TTL_S)):
        await eventually(lambda: beats.calls >= 1)
        first = WorkerRecord.decode(await hash_of(client))
        await eventually(lambda: beats.calls >= 4)
        await asyncio.sleep(0.05)  # let the 4th heartbeat's write land
        later = WorkerRecord.decode(await hash_of(client))
        assert later.last_heartbeat > first.last_heartbeat
        assert later.metrics.queue_depth > first.metrics.queue_depth
        # Well past the TTL of the first beat: the key lives on because beats renew it.
        await asyncio.sleep(TTL_S * 1.2)
        assert await client.exists("worker:gpu0") == 1


async def test_writer_removes_stale_index_members(redis_url: str, client: aioredis.Redis) -> None:
    """Members whose score is older than the TTL are cleaned out by every heartbeat."""
    await client.zadd(keys.LIVE_INDEX, {"dead": time.time() - 100, "alive": time.time()})
    announcer = Announcer(redis_url, Beats(), interval_s=INTERVAL_S, ttl_s=TTL_S)
    await announcer.announce()
    await announcer.close()
    assert set(await client.zrange(keys.LIVE_INDEX, 0, -1)) == {"alive", "gpu0"}


async def test_worker_expires_when_heartbeats_stop(redis_url: str, client: aioredis.Redis) -> None:
    """A worker that stops beating (as after kill -9) is gone from Redis within the TTL."""
    beats = Beats()
    async with running(Announcer(redis_url, beats, interval_s=INTERVAL_S, ttl_s=TTL_S)):
        await eventually(lambda: beats.calls >= 1)
        await asyncio.sleep(0.05)
    # Redis expires lazily/actively: allow its expiry cycle on top of the TTL.
    assert await until_exists(client, exists=False) < TTL_S + 1.0


async def test_reregisters_within_one_heartbeat_after_flushall(
    redis_url: str, client: aioredis.Redis
) -> None:
    """FLUSHALL wipes the worker; the next heartbeat writes it back whole."""
    beats = Beats()
    async with running(Announcer(redis_url, beats, interval_s=INTERVAL_S, ttl_s=TTL_S)):
        await eventually(lambda: beats.calls >= 1)
        await asyncio.sleep(0.05)
        await client.flushall()
        calls_at_flush = beats.calls
        await until_exists(client)
        assert beats.calls - calls_at_flush <= 1
        assert set(await hash_of(client)) >= GUIDE_FIELDS
        assert await client.zscore(keys.LIVE_INDEX, "gpu0") is not None


async def test_reregisters_within_one_heartbeat_after_redis_restart(
    redis_url: str, redis_process: RedisProcess
) -> None:
    """A restarted (empty) Redis has the worker back after at most one more heartbeat."""
    beats = Beats()
    # Slower beats than the other tests': this poll must see the record before a second beat
    # could rewrite it, also on a loaded machine.
    announcer = Announcer(redis_url, beats, interval_s=SLOW_INTERVAL_S, ttl_s=SLOW_TTL_S)
    async with running(announcer):
        await eventually(lambda: beats.calls >= 1)
        redis_process.restart()  # blocks the loop: no heartbeat runs meanwhile
        calls_at_restart = beats.calls
        client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
        try:
            await until_exists(client)
            # The beat that wrote the record, not the count when this poll saw it: a slow
            # poll on a loaded machine must not count the beats that came after.
            metrics = WorkerMetrics.from_json((await hash_of(client))["metrics"])
            assert metrics.queue_depth - calls_at_restart <= 1
        finally:
            await client.aclose()


async def test_outage_logs_one_warning_and_recovers(
    redis_url: str, redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis is down the loop keeps trying, warns once, and re-registers when it is back."""
    caplog.set_level(logging.INFO, logger="duplex.registry.announcer")
    beats = Beats()
    async with running(Announcer(redis_url, beats, interval_s=INTERVAL_S, ttl_s=TTL_S)) as task:
        await eventually(lambda: beats.calls >= 1)
        redis_process.stop()
        calls_at_stop = beats.calls
        await eventually(lambda: beats.calls >= calls_at_stop + 5)
        assert not task.done()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        redis_process.restart()
        calls_at_restart = beats.calls
        client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
        try:
            await until_exists(client)
        finally:
            await client.aclose()
        assert beats.calls - calls_at_restart <= 1
        await eventually(lambda: any("restored" in r.getMessage() for r in caplog.records))


async def test_deregister_removes_hash_and_index_entry_at_once(
    redis_url: str, client: aioredis.Redis
) -> None:
    """deregister() deletes the hash and the index member without waiting for the TTL."""
    announcer = Announcer(redis_url, Beats(), interval_s=INTERVAL_S, ttl_s=TTL_S)
    await announcer.announce()
    await announcer.deregister()
    await announcer.close()
    assert await client.exists("worker:gpu0") == 0
    assert await client.zscore(keys.LIVE_INDEX, "gpu0") is None


async def test_deregister_with_redis_down_returns_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With nothing listening, deregister() gives up within its deadline instead of raising."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    announcer = Announcer(url, Beats(), interval_s=INTERVAL_S, ttl_s=TTL_S)
    async with asyncio.timeout(5):
        await announcer.deregister()
    await announcer.close()
    assert any("deregister failed" in r.getMessage() for r in caplog.records)


def test_ttl_must_exceed_the_interval() -> None:
    """A TTL shorter than the heartbeat interval would make the worker flap: refused."""
    with pytest.raises(ValueError, match="interval_s"):
        Announcer("redis://127.0.0.1:1/0", Beats(), interval_s=1.0, ttl_s=0.5)
