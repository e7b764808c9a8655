"""How every registry component connects to Redis: with deadlines and a bounded retry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

# What a Redis outage looks like to a caller (redis-py's ConnectionError and TimeoutError
# derive from RedisError; an OSError can escape from a half-closed socket).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def open_redis(url: str, *, timeout_s: float, retries: int = 1) -> redis.Redis:
    """A client whose every connect and read has a deadline.

    redis-py's default retries ten times with backoff, which turns one dead server into
    several seconds per call; one immediate retry is enough to replace a pooled connection
    that a Redis restart closed, and `retries=0` lets the caller see every reconnect.
    """
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries),
        health_check_interval=0,
    )


def db_of(client: redis.Redis) -> int:
    """The database number the client's URL selected (keyspace channels are per database)."""
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def hash_fields(fields: Mapping[str, str]) -> Mapping[Any, Any]:
    """`fields` as redis-py's `hset(mapping=...)` is typed (its Mapping key is invariant)."""
    return fields


def describe(exc: BaseException) -> str:
    """An error for a one-line log ("ConnectionError: Connection refused")."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
