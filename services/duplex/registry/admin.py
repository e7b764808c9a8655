"""Operator writes to the registry: routing overrides and the drained set."""

from __future__ import annotations

from types import TracebackType

from duplex.registry import keys
from duplex.registry._connect import hash_fields, open_redis
from duplex.registry.records import RoutingSettings


class RegistryAdmin:
    """Writes what the console (and tests) change at run time.

    Errors are not translated here: a caller at an edge (the console's HTTP handler) turns
    a Redis error into its own status.
    """

    def __init__(self, redis_url: str, *, timeout_s: float = 2.0) -> None:
        self._redis = open_redis(redis_url, timeout_s=timeout_s)

    async def set_routing(self, settings: RoutingSettings) -> None:
        """Replace the whole `routing:strategy` hash (no stale field survives)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.ROUTING)
            pipe.hset(keys.ROUTING, mapping=hash_fields(settings.encode()))
            await pipe.execute()

    async def clear_routing(self) -> None:
        """Remove the override; views fall back to their configured routing."""
        await self._redis.delete(keys.ROUTING)

    async def drain(self, name: str) -> None:
        """The worker keeps its sessions but gets no new ones."""
        await self._redis.sadd(keys.DRAINED, name)

    async def undrain(self, name: str) -> None:
        await self._redis.srem(keys.DRAINED, name)

    async def drained(self) -> frozenset[str]:
        return frozenset(str(n) for n in await self._redis.smembers(keys.DRAINED))

    async def close(self) -> None:
        await self._redis.aclose()

    async def __aenter__(self) -> RegistryAdmin:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
