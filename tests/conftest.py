"""Shared fixtures: a real redis-server per test module, flushed per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from duplex.devtools.redis_server import RedisProcess, start_redis


@pytest.fixture(scope="module")
def redis_process() -> Iterator[RedisProcess]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> Iterator[str]:
    """URL of a real, empty redis-server (flushed before each test)."""
    if redis_process.process.poll() is not None:
        redis_process.restart()
    client = redis.Redis.from_url(redis_process.url)
    client.flushall()
    client.close()
    yield redis_process.url
