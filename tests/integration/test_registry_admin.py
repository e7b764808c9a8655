"""Operator writes (routing override, drained set) against a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from duplex.registry.admin import RegistryAdmin
from duplex.registry.records import PriorityRule, RoutingSettings, Strategy


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    yield c
    await c.aclose()


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[RegistryAdmin]:
    a = RegistryAdmin(redis_url)
    yield a
    await a.close()


async def test_set_routing_writes_the_strategy_hash(
    admin: RegistryAdmin, client: aioredis.Redis
) -> None:
    """`routing:strategy` holds RoutingSettings.encode(), and decodes back to the same settings."""
    settings = RoutingSettings(
        strategy=Strategy.PRIORITY,
        worker_priority=(PriorityRule("piper", 1), PriorityRule("kokoro", 2)),
        overflow_threshold=3,
    )
    await admin.set_routing(settings)
    fields = {str(k): str(v) for k, v in (await client.hgetall("routing:strategy")).items()}
    assert fields == settings.encode()
    assert RoutingSettings.decode(fields, RoutingSettings()) == settings


async def test_set_routing_replaces_fields_left_by_others(
    admin: RegistryAdmin, client: aioredis.Redis
) -> None:
    """A stray field in the hash does not survive a set_routing."""
    await client.hset("routing:strategy", "stray", "1")
    await admin.set_routing(RoutingSettings())
    assert "stray" not in await client.hgetall("routing:strategy")


async def test_clear_routing_deletes_the_override(
    admin: RegistryAdmin, client: aioredis.Redis
) -> None:
    """clear_routing() removes the hash, so views fall back to their config."""
    await admin.set_routing(RoutingSettings(strategy=Strategy.ROUND_ROBIN))
    await admin.clear_routing()
    assert await client.exists("routing:strategy") == 0


async def test_drain_and_undrain_edit_the_drained_set(
    admin: RegistryAdmin, client: aioredis.Redis
) -> None:
    """drain/undrain add and remove names in `workers:drained`."""
    await admin.drain("gpu0")
    await admin.drain("gpu1")
    assert await client.smembers("workers:drained") == {"gpu0", "gpu1"}
    await admin.undrain("gpu0")
    assert await admin.drained() == frozenset({"gpu1"})
