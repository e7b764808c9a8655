"""The worker's heartbeat: keeps `worker:{name}` and the live index fresh in Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from duplex.registry import keys
from duplex.registry._connect import (
    REDIS_ERRORS,
    describe,
    follow_master,
    hash_fields,
    open_redis,
)
from duplex.registry.records import WorkerRecord

_LOG = logging.getLogger(__name__)


class Announcer:
    """Announces one worker every `interval_s`; the hash expires `ttl_s` after the last beat.

    `snapshot()` is called on every heartbeat, so the record carries fresh metrics and
    `last_heartbeat` (the caller sets it to `time.time()`). Every heartbeat writes the whole
    record, so a worker is back one heartbeat after Redis restarts or is flushed. Only Redis
    errors are retried; an exception from `snapshot()` is the caller's bug and ends `run()`.
    """

    def __init__(
        self,
        redis_url: str,
        snapshot: Callable[[], WorkerRecord],
        *,
        interval_s: float,
        ttl_s: float,
        timeout_s: float | None = None,
    ) -> None:
        if interval_s <= 0 or ttl_s <= interval_s:
            raise ValueError(f"need 0 < interval_s < ttl_s, got {interval_s} and {ttl_s}")
        self._snapshot = snapshot
        self._interval_s = interval_s
        self._ttl_s = ttl_s
        # A heartbeat that takes longer than its interval is as good as lost.
        self._timeout_s = timeout_s if timeout_s is not None else min(2.0, max(0.5, interval_s))
        self._redis = open_redis(redis_url, timeout_s=self._timeout_s)
        self._name: str | None = None
        # Set by deregister(): a heartbeat must never put a deregistered worker back.
        self._retired = False

    async def announce(self) -> None:
        """One heartbeat, atomic: the hash, its TTL and the index change together."""
        record = self._snapshot()
        self._name = record.name
        key = keys.worker_key(record.name)
        now = time.time()
        async with asyncio.timeout(self._timeout_s * 3):
            # After a Sentinel failover that left the old master running, its pooled
            # connection would keep the worker announced there only.
            await follow_master(self._redis)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=hash_fields(record.encode()))
                pipe.pexpire(key, int(self._ttl_s * 1000))
                pipe.zadd(keys.LIVE_INDEX, {record.name: record.last_heartbeat})
                # Writers clean the index so that it stays as small as the live fleet.
                pipe.zremrangebyscore(keys.LIVE_INDEX, "-inf", f"({now - self._ttl_s}")
                await pipe.execute()

    async def run(self) -> None:
        """Heartbeat at once, then every `interval_s` (by the monotonic clock) until cancelled.

        Redis errors never end the loop: one warning per outage, a retry every interval.
        """
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        down_since: float | None = None
        task = asyncio.current_task()
        while not self._retired:
            try:
                await self.announce()
            except REDIS_ERRORS as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    _LOG.warning(
                        "registry heartbeat failed, retrying every %.1fs: %s",
                        self._interval_s,
                        describe(exc),
                        extra={"worker": self._name},
                    )
            else:
                if down_since is not None:
                    _LOG.info(
                        "registry heartbeat restored after %.1fs",
                        time.monotonic() - down_since,
                        extra={"worker": self._name},
                    )
                    down_since = None
            if task is not None and task.cancelling():
                # redis-py can swallow a cancellation that lands inside a pipeline.
                raise asyncio.CancelledError
            next_at += self._interval_s
            now = loop.time()
            if next_at < now:
                # A heartbeat overran: skip the missed beats rather than burst them.
                next_at = now
            await asyncio.sleep(next_at - now)

    async def deregister(self) -> None:
        """Remove the worker at once (DEL hash + ZREM index). Tolerates Redis being down:
        then the hash expires by itself within the TTL."""
        self._retired = True
        name = self._name if self._name is not None else self._snapshot().name
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.delete(keys.worker_key(name))
                    pipe.zrem(keys.LIVE_INDEX, name)
                    await pipe.execute()
        except REDIS_ERRORS as exc:
            _LOG.warning(
                "registry deregister failed; the record expires by its TTL: %s",
                describe(exc),
                extra={"worker": name},
            )

    async def close(self) -> None:
        await self._redis.aclose()
