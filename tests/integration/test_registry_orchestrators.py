"""Orchestrators publish their sessions and in-flight counts to Redis; readers find every
live orchestrator through the index, and a crashed one's expired hash leaves it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import redis.asyncio as redis
from duplex.registry import keys
from duplex.registry.orchestrators import (
    OrchestratorPublisher,
    OrchestratorRecord,
    SessionSummary,
    read_orchestrators,
)

from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    wait_for_workers,
)
from tests.integration.worker_fixtures import running_worker, worker_config


async def test_a_live_session_is_published_with_its_worker_and_first_audio(
    redis_url: str,
) -> None:
    """While a session runs, `orchestrator:{id}` lists it (transport, worker, model, first
    audio); when the orchestrator stops, its hash and index entry are gone."""
    config = orch_config(redis_url)
    config = replace(config, redis=replace(config.redis, publish_interval_ms=100))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (
            running_worker(worker_config(redis_url, name="w1")),
            running_orchestrator(config) as orch,
        ):
            await wait_for_workers(orch, {"w1"})
            async with Client(orch) as ws:
                await ws.start(model_id="tone-fast")
                await ws.say("Hello.")
                async with asyncio.timeout(5):
                    while True:
                        records = await read_orchestrators(client)
                        sessions = [s for r in records for s in r.sessions]
                        if sessions and sessions[0].first_audio_ms is not None:
                            break
                        await asyncio.sleep(0.05)
            (record,) = records
            (session,) = record.sessions
            assert (session.transport, session.worker, session.model_id) == (
                "websocket", "w1", "tone-fast",
            )  # fmt: skip
            assert session.session_id == ws.got.started["session_id"]  # type: ignore[index]
            assert 0 < session.first_audio_ms < 5000 and record.sessions_total == 1
            assert record.url == orch.http_url  # the bound port, not the configured 0
        assert await read_orchestrators(client) == []
        assert await client.zcard(keys.ORCHESTRATORS_LIVE) == 0
    finally:
        await client.aclose()


async def test_an_orchestrator_that_stops_publishing_drops_out_of_the_index(
    redis_url: str,
) -> None:
    """A publisher that dies without cleaning up (kill -9) leaves a hash that expires; the
    next reader removes its id from `orchestrators:live`."""

    def snapshot() -> OrchestratorRecord:
        summary = SessionSummary("s1", "webrtc", "w1", "m", "speaking", time.time(), 80.0, 1)
        return OrchestratorRecord(
            "o1", "http://h:8080", time.time(), time.time(), {"w1": 1}, (summary,), 1
        )

    publisher = OrchestratorPublisher(redis_url, "o1", snapshot, interval_s=0.05, ttl_s=0.3)
    await publisher.publish_once()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        (record,) = await read_orchestrators(client)
        assert record.inflight == {"w1": 1} and record.sessions[0].barge_ins == 1
        await asyncio.sleep(0.5)  # the TTL passes with no refresh
        assert await read_orchestrators(client) == []
        assert await client.zcard(keys.ORCHESTRATORS_LIVE) == 0
    finally:
        await client.aclose()
        await publisher.stop()
