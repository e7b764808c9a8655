"""Orchestrator processes in Redis: each publishes its in-flight counts and live sessions, so
that a console (or a what-if routing view) sees every orchestrator of a fleet.

`orchestrator:{id}` is a hash with a TTL, refreshed every interval; `orchestrators:live` is
a sorted set of ids scored by their last heartbeat, so readers never scan keys. A reader
drops ids whose hash has expired (a crashed orchestrator) from the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis

from duplex.registry import keys
from duplex.registry._connect import REDIS_ERRORS, follow_master, hash_fields, open_redis
from duplex.registry.records import RegistryDecodeError

log = logging.getLogger(__name__)

MAX_SESSIONS_PUBLISHED = 200  # a bounded hash; the count of all sessions goes beside it


@dataclass(frozen=True)
class SessionSummary:
    """One live session, as a console shows it (no secret: no key, no text)."""

    session_id: str
    transport: str
    worker: str
    model_id: str
    state: str
    started_at: float  # unix seconds
    first_audio_ms: float | None = None
    barge_ins: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "transport": self.transport,
            "worker": self.worker,
            "model_id": self.model_id,
            "state": self.state,
            "started_at": round(self.started_at, 3),
            "first_audio_ms": self.first_audio_ms,
            "barge_ins": self.barge_ins,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionSummary:
        first = data.get("first_audio_ms")
        return cls(
            session_id=str(data["session_id"]),
            transport=str(data["transport"]),
            worker=str(data["worker"]),
            model_id=str(data["model_id"]),
            state=str(data["state"]),
            started_at=float(data["started_at"]),
            first_audio_ms=None if first is None else float(first),
            barge_ins=int(data.get("barge_ins", 0)),
        )


@dataclass(frozen=True)
class OrchestratorRecord:
    """One orchestrator process as published in `orchestrator:{id}`."""

    id: str
    url: str  # where its HTTP port answers (for links and health)
    started_at: float
    last_heartbeat: float
    inflight: Mapping[str, int] = field(default_factory=dict)  # worker -> sessions routed
    sessions: tuple[SessionSummary, ...] = ()
    sessions_total: int = 0  # live sessions, even beyond the published ones

    def encode(self) -> dict[str, str]:
        return {
            "id": self.id,
            "url": self.url,
            "started_at": repr(self.started_at),
            "last_heartbeat": repr(self.last_heartbeat),
            "inflight": json.dumps(dict(self.inflight), sort_keys=True),
            "sessions": json.dumps([s.to_dict() for s in self.sessions]),
            "sessions_total": str(self.sessions_total),
        }

    @classmethod
    def decode(cls, fields: Mapping[str, str]) -> OrchestratorRecord:
        try:
            inflight = json.loads(fields.get("inflight", "{}"))
            sessions = json.loads(fields.get("sessions", "[]"))
            if not isinstance(inflight, dict) or not isinstance(sessions, list):
                raise ValueError("inflight must be an object and sessions a list")
            return cls(
                id=fields["id"],
                url=fields.get("url", ""),
                started_at=float(fields["started_at"]),
                last_heartbeat=float(fields["last_heartbeat"]),
                inflight={str(k): int(v) for k, v in inflight.items()},
                sessions=tuple(SessionSummary.from_dict(s) for s in sessions),
                sessions_total=int(fields.get("sessions_total", len(sessions))),
            )
        except KeyError as exc:
            raise RegistryDecodeError(f"orchestrator hash lacks field {exc.args[0]!r}") from exc
        except (ValueError, TypeError) as exc:
            raise RegistryDecodeError(f"orchestrator hash: {exc}") from exc


Snapshot = Callable[[], OrchestratorRecord]


class OrchestratorPublisher:
    """Publishes `snapshot()` every ``interval_s`` with a TTL of ``ttl_s``; removes it on stop.

    A Redis outage is logged once and retried on the next tick: publishing is best effort and
    never affects sessions.
    """

    def __init__(
        self,
        redis_url: str,
        orchestrator_id: str,
        snapshot: Snapshot,
        *,
        interval_s: float = 1.0,
        ttl_s: float = 5.0,
    ) -> None:
        self._redis = open_redis(redis_url, timeout_s=min(2.0, interval_s * 2))
        self._id = orchestrator_id
        self._snapshot = snapshot
        self._interval_s = interval_s
        self._ttl_ms = int(ttl_s * 1000)
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="orchestrator-publisher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(*REDIS_ERRORS):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.orchestrator_key(self._id))
                pipe.zrem(keys.ORCHESTRATORS_LIVE, self._id)
                await pipe.execute()
        await self._redis.aclose()

    async def publish_once(self) -> None:
        record = self._snapshot()
        key = keys.orchestrator_key(self._id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=hash_fields(record.encode()))
            pipe.pexpire(key, self._ttl_ms)
            pipe.zadd(keys.ORCHESTRATORS_LIVE, {self._id: record.last_heartbeat})
            await pipe.execute()

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(max(2.0, self._interval_s * 2)):
                    await follow_master(self._redis)  # after a Sentinel failover: the new master
                await self.publish_once()
                if self._failing:
                    log.info("publishing to Redis again", extra={"orchestrator": self._id})
                self._failing = False
            except REDIS_ERRORS as exc:
                if not self._failing:
                    log.warning(
                        "cannot publish sessions to Redis; retrying",
                        extra={"orchestrator": self._id, "error": repr(exc)},
                    )
                self._failing = True
            await asyncio.sleep(self._interval_s)


async def read_orchestrators(client: redis.Redis) -> list[OrchestratorRecord]:
    """Every live orchestrator (index + one pipelined read, never a key scan); ids whose
    hash has expired are removed from the index."""
    ids = [str(i) for i in await client.zrange(keys.ORCHESTRATORS_LIVE, 0, -1)]
    if not ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for orchestrator_id in ids:
            pipe.hgetall(keys.orchestrator_key(orchestrator_id))
        hashes: list[dict[str, str]] = await pipe.execute()
    records, gone = [], []
    for orchestrator_id, fields in zip(ids, hashes, strict=True):
        if not fields:
            gone.append(orchestrator_id)
            continue
        try:
            records.append(OrchestratorRecord.decode(fields))
        except RegistryDecodeError as exc:
            log.warning("bad orchestrator record", extra={"id": orchestrator_id, "error": str(exc)})
    if gone:
        await client.zrem(keys.ORCHESTRATORS_LIVE, *gone)
    return records
