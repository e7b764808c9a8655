"""The orchestrator's live, in-memory view of the registry, kept fresh by keyspace events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from duplex.registry import keys
from duplex.registry._connect import REDIS_ERRORS, db_of, describe, follow_master, open_redis
from duplex.registry.records import RegistryDecodeError, RoutingSettings, WorkerRecord

_LOG = logging.getLogger(__name__)

# Keyspace events (K) for generic (g: del, expire), hash (h), expired (x), set (s) and
# sorted-set (z) commands: everything the registry's writers do.
_NEEDED_FLAGS = "Kghxsz"
_ALL_ALIAS = "g$lshzxet"  # what the `A` flag stands for
_MAX_BATCH = 1024  # events coalesced into one pipelined read


class RegistryView:
    """Live workers, the drained set and the routing override, mirrored from Redis.

    Reads are synchronous and never touch the network: `workers()`, `drained()`,
    `routing()` return the latest snapshot. A background task subscribes to keyspace
    notifications and re-reads only the key an event names; every `reconcile_s` it
    re-reads the whole registry from the `workers:live` index (never `KEYS`/`SCAN`) to
    repair missed events and Redis restarts. While Redis is down the last snapshot is
    kept, minus workers whose `last_heartbeat` is older than `stale_after_s`.
    """

    def __init__(
        self,
        redis_url: str,
        fallback: RoutingSettings,
        *,
        reconcile_s: float = 1.0,
        stale_after_s: float | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self._url = redis_url
        self._fallback = fallback
        self._reconcile_s = reconcile_s
        # The guide's default worker_ttl_ms: a worker silent for longer is gone.
        self._stale_after_s = 15.0 if stale_after_s is None else stale_after_s
        self._timeout_s = timeout_s
        self._data = open_redis(redis_url, timeout_s=timeout_s)
        self._db = db_of(self._data)
        self._workers: dict[str, WorkerRecord] = {}
        self._snapshot: Mapping[str, WorkerRecord] | None = None
        self._drained: frozenset[str] = frozenset()
        self._routing_fields: dict[str, str] = {}
        self._routing = fallback
        self._redis_ok = False
        self._undecodable: set[str] = set()  # workers already logged as undecodable
        self._warned: set[str] = set()  # degraded modes already logged
        self.version = 0
        self._changed = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- reads (no I/O) -------------------------------------------------------------------

    def workers(self) -> Mapping[str, WorkerRecord]:
        """Live workers by name (drained ones included), as an immutable snapshot."""
        if self._snapshot is None:
            self._snapshot = MappingProxyType(dict(self._workers))
        return self._snapshot

    def drained(self) -> frozenset[str]:
        return self._drained

    def routing(self) -> RoutingSettings:
        """The `routing:strategy` hash decoded over the fallback; the fallback when the hash
        is absent or undecodable."""
        return self._routing

    def redis_ok(self) -> bool:
        return self._redis_ok

    # The name `timeout` is the agreed public API (callers pass it by keyword).
    async def wait_for_change(self, after_version: int, timeout: float) -> int:  # noqa: ASYNC109
        """Wait until `version > after_version` or `timeout` passes; return `version`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.version <= after_version:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            event = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()
        return self.version

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start watching; returns after the first sync attempt (or its deadline), so a
        caller that starts with Redis up sees the registry at once."""
        if self._task is not None:
            raise RuntimeError("RegistryView already started")
        self._task = asyncio.create_task(self._supervise(), name="registry-view")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout_s * 4):
                await self._first_attempt.wait()

    async def stop(self) -> None:
        # redis-py can swallow a cancellation inside a pubsub read, so cancel until the task
        # is really done (the loops also check `_stopping`), within a deadline.
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout_s * 4
            while not task.done() and loop.time() < deadline:
                task.cancel()
                await asyncio.wait({task}, timeout=0.25)
            if not task.done():
                _LOG.warning("registry view task did not stop within its deadline")
            else:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
        with contextlib.suppress(*REDIS_ERRORS):
            await self._data.aclose()

    async def __aenter__(self) -> RegistryView:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the watcher task -----------------------------------------------------------------

    async def _supervise(self) -> None:
        warned = False  # one warning per outage, not one per retry
        while not self._stopping:
            try:
                await self._watch()
            except REDIS_ERRORS as exc:
                if self._redis_ok or not warned:
                    _LOG.warning(
                        "registry view lost Redis, keeping the last snapshot: %s",
                        describe(exc),
                    )
                warned = True
            except Exception:
                # A bug must not end discovery for good: log it and resync from scratch.
                _LOG.exception("registry view failed; resyncing")
                self._set_redis_ok(False)
            was_ok = self._redis_ok
            self._set_redis_ok(False)
            self._first_attempt.set()
            self._prune_stale()
            # Reconnect at once after a connected period ends (a restart is usually over by
            # then); while Redis stays down, retry at a calm pace.
            if not was_ok:
                await asyncio.sleep(min(self._reconcile_s, 1.0))

    async def _watch(self) -> None:
        """One connected period: subscribe, sync, then follow events until Redis fails."""
        # The subscriber never retries on its own: a silent reconnect would hide a restart
        # (and with it lost notification settings and missed events).
        subscriber = open_redis(self._url, timeout_s=self._timeout_s, retries=0)
        pubsub = subscriber.pubsub()
        try:
            await self._enable_notifications()
            early = await self._subscribe(pubsub)
            await self._reconcile()
            if not self._redis_ok:
                _LOG.info("registry view connected to Redis", extra={"workers": len(self._workers)})
            self._set_redis_ok(True)
            self._first_attempt.set()
            if early:
                await self._apply_events(early)
            await self._follow(pubsub if early is not None else None)
        finally:
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                async with asyncio.timeout(self._timeout_s):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                async with asyncio.timeout(self._timeout_s):
                    await subscriber.aclose()

    async def _follow(self, pubsub: redis.client.PubSub | None) -> None:
        """Apply events as they come (coalesced into batches); reconcile on schedule."""
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + self._reconcile_s
        while not self._stopping:
            wait = next_reconcile - loop.time()
            if wait <= 0:
                async with asyncio.timeout(self._timeout_s * 2):
                    moved = await follow_master(self._data)
                if moved:
                    # The subscriber still listens to the old master, and the new one needs
                    # notifications switched on: reconnect as after an outage.
                    raise RedisConnectionError("Sentinel names a new master")
                await self._reconcile()
                next_reconcile = loop.time() + self._reconcile_s
                continue
            if pubsub is None:
                await asyncio.sleep(wait)
                continue
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is None:
                continue
            batch = [message]
            while len(batch) < _MAX_BATCH:
                more = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
                if more is None:
                    break
                batch.append(more)
            await self._apply_events(batch)

    async def _subscribe(self, pubsub: redis.client.PubSub) -> list[dict[str, Any]] | None:
        """Subscribe to the registry's keyspace channels; None when the server refuses
        (an ACL without channel rights): then the view lives on reconciles alone."""
        try:
            await pubsub.psubscribe(keys.worker_channel_pattern(self._db))
            await pubsub.subscribe(
                keys.keyspace_channel(self._db, keys.DRAINED),
                keys.keyspace_channel(self._db, keys.ROUTING),
            )
            return await self._await_subscriptions(pubsub, expected=3)
        except ResponseError as exc:
            self._warn_once(
                "subscribe",
                "cannot subscribe to keyspace notifications (%s); relying on a resync every %.1fs",
                exc,
            )
            return None

    async def _await_subscriptions(
        self, pubsub: redis.client.PubSub, expected: int
    ) -> list[dict[str, Any]]:
        """Wait for the server to confirm the subscriptions, so that the sync that follows
        cannot miss an event; keyspace events that arrive meanwhile are returned."""
        confirmed = 0
        early: list[dict[str, Any]] = []
        async with asyncio.timeout(self._timeout_s * 2):
            while confirmed < expected:
                message = await pubsub.get_message(timeout=self._timeout_s)
                if message is None:
                    continue
                if message["type"] in ("subscribe", "psubscribe"):
                    confirmed += 1
                else:
                    early.append(message)
        return early

    async def _enable_notifications(self) -> None:
        """Turn on the keyspace events the view needs, keeping whatever else is on."""
        try:
            current = await self._data.config_get("notify-keyspace-events")
            flags = str(current.get("notify-keyspace-events", ""))
            merged = _merge_flags(flags)
            if merged is not None:
                await self._data.config_set("notify-keyspace-events", merged)
                _LOG.info("enabled keyspace notifications", extra={"flags": merged})
        except ResponseError as exc:
            self._warn_once(
                "config",
                "cannot enable keyspace notifications (%s); relying on a resync every %.1fs",
                exc,
            )

    def _warn_once(self, topic: str, message: str, *args: object) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            _LOG.warning(message, *args, self._reconcile_s)

    # -- reading Redis --------------------------------------------------------------------

    async def _reconcile(self) -> None:
        now = time.time()
        oldest = now - self._stale_after_s
        async with asyncio.timeout(self._timeout_s * 2):
            async with self._data.pipeline(transaction=False) as pipe:
                # Readers clean the index too: with every worker dead, nobody else would.
                pipe.zremrangebyscore(keys.LIVE_INDEX, "-inf", f"({oldest}")
                pipe.zrangebyscore(keys.LIVE_INDEX, oldest, "+inf")
                pipe.smembers(keys.DRAINED)
                pipe.hgetall(keys.ROUTING)
                cleaned, *reads = await pipe.execute(raise_on_error=False)
            if isinstance(cleaned, ResponseError):
                # A read-only ACL user: the cleanup is a courtesy, the reads still count.
                self._warn_once(
                    "cleanup", "cannot clean %s (%s); resync every %.1fs", keys.LIVE_INDEX, cleaned
                )
            for result in reads:
                if isinstance(result, Exception):
                    raise result
            names, drained, routing_fields = reads
            # Workers already in view but missing from the index are re-read too, so a
            # worker that lost its index entry does not flap out and back in.
            candidates = sorted(set(names) | set(self._workers))
            hashes = await self._read_workers(candidates)
        fresh = {}
        for name, fields in zip(candidates, hashes, strict=True):
            record = self._decode_worker(name, fields, now)
            if record is not None:
                fresh[name] = record
        self._replace_workers(fresh)
        self._set_drained(drained)
        self._set_routing(routing_fields)

    async def _apply_events(self, messages: Sequence[Mapping[str, Any]]) -> None:
        last_event: dict[str, str] = {}  # per worker, the last event wins
        drained_dirty = routing_dirty = False
        for message in messages:
            channel, event = str(message["channel"]), str(message["data"])
            name = keys.worker_name(channel)
            if name is not None:
                last_event[name] = event
            elif keys.key_of(channel) == keys.DRAINED:
                drained_dirty = True
            elif keys.key_of(channel) == keys.ROUTING:
                routing_dirty = True
        gone = [n for n, e in last_event.items() if e in keys.REMOVAL_EVENTS]
        changed = [n for n, e in last_event.items() if e not in keys.REMOVAL_EVENTS]
        async with asyncio.timeout(self._timeout_s * 2):
            async with self._data.pipeline(transaction=False) as pipe:
                for name in changed:
                    pipe.hgetall(keys.worker_key(name))
                if drained_dirty:
                    pipe.smembers(keys.DRAINED)
                if routing_dirty:
                    pipe.hgetall(keys.ROUTING)
                results = list(await pipe.execute()) if len(pipe) else []
        now = time.time()
        updates: dict[str, WorkerRecord | None] = dict.fromkeys(gone)
        for name, fields in zip(changed, results, strict=False):
            updates[name] = self._decode_worker(name, fields, now)
        self._update_workers(updates)
        rest = results[len(changed) :]
        if drained_dirty:
            self._set_drained(rest.pop(0))
        if routing_dirty:
            self._set_routing(rest.pop(0))

    async def _read_workers(self, names: Sequence[str]) -> list[dict[str, str]]:
        if not names:
            return []
        async with self._data.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.worker_key(name))
            return list(await pipe.execute())

    def _decode_worker(
        self, name: str, fields: Mapping[str, str], now: float
    ) -> WorkerRecord | None:
        if not fields:
            return None
        try:
            record = WorkerRecord.decode(fields)
            if record.name != name:
                raise RegistryDecodeError(f"hash {keys.worker_key(name)} names {record.name!r}")
        except RegistryDecodeError as exc:
            if name not in self._undecodable:
                self._undecodable.add(name)
                _LOG.warning("skipping undecodable worker record: %s", exc, extra={"worker": name})
            return None
        self._undecodable.discard(name)
        if now - record.last_heartbeat > self._stale_after_s:
            return None
        return record

    # -- state changes (each bumps `version`) --------------------------------------------

    def _bump(self) -> None:
        self.version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _replace_workers(self, fresh: dict[str, WorkerRecord]) -> None:
        if fresh != self._workers:
            self._workers = fresh
            self._snapshot = None
            self._bump()

    def _update_workers(self, updates: Mapping[str, WorkerRecord | None]) -> None:
        changed = False
        for name, record in updates.items():
            if record is None:
                changed |= self._workers.pop(name, None) is not None
            elif self._workers.get(name) != record:
                self._workers[name] = record
                changed = True
        if changed:
            self._snapshot = None
            self._bump()

    def _prune_stale(self) -> None:
        oldest = time.time() - self._stale_after_s
        self._update_workers(
            {n: None for n, r in self._workers.items() if r.last_heartbeat < oldest}
        )

    def _set_drained(self, names: set[str] | frozenset[str]) -> None:
        drained = frozenset(names)
        if drained != self._drained:
            self._drained = drained
            self._bump()

    def _set_routing(self, fields: dict[str, str]) -> None:
        if fields == self._routing_fields:
            return
        self._routing_fields = fields
        routing = self._fallback
        if fields:
            try:
                routing = RoutingSettings.decode(fields, self._fallback)
            except RegistryDecodeError as exc:
                _LOG.warning("undecodable %s, using the configured routing: %s", keys.ROUTING, exc)
        if routing != self._routing:
            self._routing = routing
            self._bump()

    def _set_redis_ok(self, ok: bool) -> None:
        if ok != self._redis_ok:
            self._redis_ok = ok
            self._bump()


def _merge_flags(current: str) -> str | None:
    """The notify-keyspace-events value to set, or None when `current` already covers ours."""
    have = set(current)
    effective = have | (set(_ALL_ALIAS) if "A" in have else set())
    missing = [f for f in _NEEDED_FLAGS if f not in effective]
    return None if not missing else current + "".join(missing)
