"""In-flight counts shared by every orchestrator of a fleet, so that routing stays fair when
several orchestrators route at once.

`inflight:{worker}` is a sorted set: one member per session routed to that worker and not yet
ended, `{orchestrator}|{routed_at}|{token}`, scored by its lease expiry (unix seconds). An
orchestrator adds a member when it routes (ZADD), removes it when the session ends (ZREM), and
renews its own leases every `lease_s / 3`; the members of a crashed orchestrator stop counting
when their lease runs out (readers skip expired scores and prune them). Every orchestrator
mirrors the other orchestrators' members in memory, kept fresh by keyspace notifications (`z`
events) and a periodic re-read, so that routing reads them with no I/O.

Routing counts a member only until the worker's heartbeat shows the session (`routed_at` is in
the member for that), exactly as an orchestrator counts its own decisions: no session is
counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError

from duplex.registry._connect import REDIS_ERRORS, db_of, describe, follow_master, open_redis
from duplex.registry.keys import INFLIGHT_PREFIX, ORCHESTRATORS_LIVE

_LOG = logging.getLogger(__name__)

_SEP = "|"
_MAX_BATCH = 256


async def _follows_new_master(client: redis.Redis, timeout_s: float) -> bool:
    async with asyncio.timeout(timeout_s):
        return await follow_master(client)


def inflight_key(worker: str) -> str:
    return f"{INFLIGHT_PREFIX}{worker}"


@dataclass(frozen=True)
class Entry:
    """One routed session as the sorted set holds it."""

    orchestrator: str
    routed_at: float
    token: str

    def member(self) -> str:
        return _SEP.join((self.orchestrator, repr(self.routed_at), self.token))

    @classmethod
    def parse(cls, member: str) -> Entry | None:
        parts = member.split(_SEP)
        if len(parts) != 3:
            return None
        try:
            return cls(parts[0], float(parts[1]), parts[2])
        except ValueError:
            return None


class SharedInflight:
    """This orchestrator's entries written to Redis, and the others' mirrored from it.

    `add` and `remove` never wait: the writes are queued for a background task (a Redis
    outage then costs only fairness, never a session). `others(worker, since)` is a read of
    the mirror.
    """

    def __init__(
        self,
        redis_url: str,
        orchestrator_id: str,
        *,
        lease_s: float = 6.0,
        reconcile_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        if _SEP in orchestrator_id:
            raise ValueError(f"an orchestrator id must not contain {_SEP!r}")
        self.orchestrator_id = orchestrator_id
        self._url = redis_url
        self._lease_s = lease_s
        self._reconcile_s = reconcile_s
        self._timeout_s = timeout_s
        self._redis = open_redis(redis_url, timeout_s=timeout_s)
        self._db = db_of(self._redis)
        self._own: dict[str, dict[str, Entry]] = {}  # worker -> member -> entry
        self._mirror: dict[str, tuple[Entry, ...]] = {}  # worker -> the others' live entries
        self._watched: frozenset[str] = frozenset()
        self._watched_source: object = None
        self._rank = (0, 1)  # this orchestrator's place among the live ones, and their number
        self._ops: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the router calls (no I/O) ----------------------------------------------------

    def add(self, worker: str, routed_at: float) -> str:
        """Count a session routed to `worker`; returns its member (for `remove`)."""
        entry = Entry(self.orchestrator_id, routed_at, uuid.uuid4().hex[:12])
        member = entry.member()
        self._own.setdefault(worker, {})[member] = entry
        self._ops.put_nowait(("add", worker, member))
        return member

    def remove(self, worker: str, member: str) -> None:
        """The session ended: stop counting it (here at once, in Redis shortly)."""
        entries = self._own.get(worker)
        if entries is not None and entries.pop(member, None) is not None:
            if not entries:
                del self._own[worker]
            self._ops.put_nowait(("remove", worker, member))

    def others(self, worker: str, since: float) -> int:
        """Other orchestrators' live sessions on `worker` routed after `since`."""
        return sum(1 for e in self._mirror.get(worker, ()) if e.routed_at > since)

    def mirrored(self) -> Iterable[str]:
        """The workers on which other orchestrators have live sessions (a decision need
        only ask `others` for these, not for the whole fleet)."""
        return [w for w, entries in self._mirror.items() if entries]

    def counts(self) -> Mapping[str, int]:
        """Live routed sessions per worker, over every orchestrator (for pages)."""
        workers = set(self._own) | set(self._mirror)
        return {
            w: len(self._own.get(w, {})) + len(self._mirror.get(w, ()))
            for w in sorted(workers)
            if self._own.get(w) or self._mirror.get(w)
        }

    def offset(self, candidates: int) -> int:
        """Where this orchestrator starts its rotation over `candidates` tied workers.

        Decisions made at the same instant on two orchestrators cannot see each other (the
        entries travel through Redis in about a millisecond); spreading the orchestrators'
        starting points over the workers keeps even those apart: with 2 orchestrators and 4
        idle workers, one starts at the first worker and the other at the third.
        """
        rank, total = self._rank
        return rank * candidates // total

    @property
    def orchestrators(self) -> int:
        """Live orchestrators known (this one included), as of the last re-read."""
        return self._rank[1]

    def watch(self, workers: Iterable[str]) -> None:
        """The workers whose sets the periodic re-read covers (the live ones)."""
        if workers is not self._watched_source:  # the view hands out one mapping per change
            self._watched_source = workers
            self._watched = frozenset(workers)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._retrying(self._write), name="inflight-writer"),
                asyncio.create_task(self._retrying(self._follow), name="inflight-reader"),
            ]

    async def stop(self) -> None:
        """Stop the tasks and withdraw this orchestrator's members (best effort)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            while not task.done():  # redis-py can swallow one cancellation
                task.cancel()
                await asyncio.wait({task}, timeout=0.25)
        with contextlib.suppress(*REDIS_ERRORS):
            async with asyncio.timeout(self._timeout_s):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for worker, entries in self._own.items():
                        if entries:
                            pipe.zrem(inflight_key(worker), *entries)
                    await pipe.execute()
        with contextlib.suppress(*REDIS_ERRORS):
            await self._redis.aclose()

    # -- background ------------------------------------------------------------------------

    async def _retrying(self, loop_body: Callable[[], Awaitable[None]]) -> None:
        failing = False
        while True:
            try:
                await loop_body()
            except REDIS_ERRORS as exc:
                if not failing:
                    _LOG.warning("shared in-flight counts: Redis failed: %s", describe(exc))
                failing = True
            except Exception:
                _LOG.exception("shared in-flight counts failed; restarting")
            await asyncio.sleep(min(self._reconcile_s, 1.0))

    async def _write(self) -> None:
        """Apply queued adds and removes in batches; renew own leases on schedule. After a
        reconnect everything of ours is written again (Redis may have restarted empty)."""
        loop = asyncio.get_running_loop()
        await self._renew()
        renew_at = loop.time() + self._lease_s / 3
        while True:
            batch: list[tuple[str, str, str]] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, renew_at - loop.time())):
                    batch.append(await self._ops.get())
            while batch and len(batch) < _MAX_BATCH and not self._ops.empty():
                batch.append(self._ops.get_nowait())
            if batch:
                expiry = time.time() + self._lease_s
                async with asyncio.timeout(self._timeout_s * 2):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for op, worker, member in batch:
                            key = inflight_key(worker)
                            if op == "add":
                                pipe.zadd(key, {member: expiry})
                                pipe.pexpire(key, int(self._lease_s * 2000))
                            else:
                                pipe.zrem(key, member)
                        await pipe.execute()
            if loop.time() >= renew_at:
                await self._renew()
                renew_at = loop.time() + self._lease_s / 3

    async def _renew(self) -> None:
        # After a Sentinel failover, write to the new master (it may also have started empty:
        # the renewal below writes every entry of ours again).
        async with asyncio.timeout(self._timeout_s * 2):
            await follow_master(self._redis)
        now = time.time()
        expiry = now + self._lease_s
        async with asyncio.timeout(self._timeout_s * 2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for worker, entries in self._own.items():
                    key = inflight_key(worker)
                    if entries:
                        pipe.zadd(key, dict.fromkeys(entries, expiry))
                        pipe.pexpire(key, int(self._lease_s * 2000))
                    # Crashed orchestrators' members go once their lease is over.
                    pipe.zremrangebyscore(key, "-inf", f"({now}")
                if len(pipe):
                    await pipe.execute()

    async def _follow(self) -> None:
        """Mirror the others' entries: on every `inflight:*` event, and every reconcile_s."""
        subscriber = open_redis(self._url, timeout_s=self._timeout_s, retries=0)
        pubsub = subscriber.pubsub()
        try:
            await pubsub.psubscribe(f"__keyspace@{self._db}__:{INFLIGHT_PREFIX}*")
            loop = asyncio.get_running_loop()
            await self._reread(self._watched | set(self._mirror))
            next_full = loop.time() + self._reconcile_s
            while True:
                wait = max(0.0, next_full - loop.time())
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                dirty: set[str] = set()
                while message is not None and len(dirty) < _MAX_BATCH:
                    channel = str(message["channel"])
                    dirty.add(channel.split(f":{INFLIGHT_PREFIX}", 1)[-1])
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
                full = loop.time() >= next_full
                if full and await _follows_new_master(subscriber, self._timeout_s * 2):
                    # Subscribed on a demoted master: start over on the new one.
                    raise RedisConnectionError("the Sentinels name a new master")
                if full:
                    dirty |= self._watched | set(self._mirror)
                    next_full = loop.time() + self._reconcile_s
                if dirty or full:
                    await self._reread(dirty)
        finally:
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                async with asyncio.timeout(self._timeout_s):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                async with asyncio.timeout(self._timeout_s):
                    await subscriber.aclose()

    async def _reread(self, workers: Iterable[str]) -> None:
        names = sorted(workers)
        now = time.time()
        async with asyncio.timeout(self._timeout_s * 2):
            async with self._redis.pipeline(transaction=False) as pipe:
                # The live orchestrators (their publisher keeps the index): for `offset`.
                pipe.zrangebyscore(ORCHESTRATORS_LIVE, now - self._lease_s, "+inf")
                for name in names:
                    pipe.zrangebyscore(inflight_key(name), now, "+inf")
                live, *results = await pipe.execute()
        ids = sorted({str(i) for i in live} | {self.orchestrator_id})
        self._rank = (ids.index(self.orchestrator_id), len(ids))
        for name, members in zip(names, results, strict=True):
            entries = tuple(
                e
                for e in (Entry.parse(str(m)) for m in members)
                if e is not None and e.orchestrator != self.orchestrator_id
            )
            if entries:
                self._mirror[name] = entries
            else:
                self._mirror.pop(name, None)
