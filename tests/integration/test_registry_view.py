"""The orchestrator's live registry view against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
import redis
import redis.asyncio as aioredis
from duplex.devtools.redis_server import RedisProcess, start_redis
from duplex.registry import keys
from duplex.registry._connect import hash_fields
from duplex.registry.admin import RegistryAdmin
from duplex.registry.announcer import Announcer
from duplex.registry.records import (
    Capabilities,
    RoutingSettings,
    Strategy,
    WorkerMetrics,
    WorkerRecord,
)
from duplex.registry.view import RegistryView, _merge_flags

INTERVAL_S = 0.2
TTL_S = 1.0
# Long enough that only keyspace events (never a reconcile) can explain what a test sees.
NO_RECONCILE_S = 60.0
FALLBACK = RoutingSettings(strategy=Strategy.ROUND_ROBIN, overflow_threshold=7)


def record(name: str, **changes: object) -> WorkerRecord:
    base = WorkerRecord(
        name=name,
        addr="grpc://127.0.0.1:7001",
        adapter_type="piper",
        capabilities=Capabilities(languages=("en",)),
        resident_models=("piper-en-joe",),
        available_models=("piper-en-joe",),
        metrics=WorkerMetrics(),
        last_heartbeat=time.time(),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def snapshot_of(name: str) -> Callable[[], WorkerRecord]:
    return lambda: record(name, last_heartbeat=time.time())


@contextlib.asynccontextmanager
async def announcing(url: str, name: str) -> AsyncIterator[Announcer]:
    announcer = Announcer(url, snapshot_of(name), interval_s=INTERVAL_S, ttl_s=TTL_S)
    task = asyncio.create_task(announcer.run())
    try:
        yield announcer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await announcer.close()


async def notify_flags(client: aioredis.Redis) -> str:
    return str((await client.config_get("notify-keyspace-events"))["notify-keyspace-events"])


async def until(view: RegistryView, check: Callable[[], bool], within: float) -> float:
    """Wait on the view's change signal until check() holds; return the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        remaining = within - (loop.time() - start)
        assert remaining > 0, "the view did not reach the expected state in time"
        await view.wait_for_change(view.version, remaining)
    return loop.time() - start


async def test_sees_a_new_worker_within_one_heartbeat_from_events(redis_url: str) -> None:
    """A worker that starts announcing appears in a running view within one heartbeat."""
    async with RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view:
        assert view.redis_ok()
        assert view.workers() == {}
        async with announcing(redis_url, "gpu0"):
            await until(view, lambda: "gpu0" in view.workers(), within=INTERVAL_S + 0.5)
            assert view.workers()["gpu0"].addr == "grpc://127.0.0.1:7001"


async def test_start_returns_with_already_registered_workers(redis_url: str) -> None:
    """Workers registered before the view starts are in its first snapshot."""
    announcer = Announcer(redis_url, snapshot_of("early"), interval_s=INTERVAL_S, ttl_s=TTL_S)
    await announcer.announce()
    await announcer.close()
    async with RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view:
        assert set(view.workers()) == {"early"}


async def test_worker_that_stops_heartbeating_leaves_via_expired_event(redis_url: str) -> None:
    """With no reconcile due, the `expired` event alone removes a silent worker within the TTL."""
    async with RegistryView(
        redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S, stale_after_s=NO_RECONCILE_S
    ) as view:
        async with announcing(redis_url, "gpu0"):
            await until(view, lambda: "gpu0" in view.workers(), within=2.0)
        took = await until(view, lambda: "gpu0" not in view.workers(), within=TTL_S + 2.0)
        assert took <= TTL_S + 1.0  # the TTL plus Redis's expiry cycle


async def test_heartbeats_refresh_the_record_in_view(redis_url: str) -> None:
    """Each heartbeat's new last_heartbeat reaches the view."""
    async with (
        RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view,
        announcing(redis_url, "gpu0"),
    ):
        await until(view, lambda: "gpu0" in view.workers(), within=2.0)
        first = view.workers()["gpu0"].last_heartbeat
        await until(view, lambda: view.workers()["gpu0"].last_heartbeat > first, within=2.0)


async def test_deregister_removes_the_worker_from_view_at_once(redis_url: str) -> None:
    """deregister() (DEL) is seen by the view without waiting for the TTL."""
    async with RegistryView(
        redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S, stale_after_s=NO_RECONCILE_S
    ) as view:
        async with announcing(redis_url, "gpu0") as announcer:
            await until(view, lambda: "gpu0" in view.workers(), within=2.0)
        await announcer.deregister()
        took = await until(view, lambda: "gpu0" not in view.workers(), within=2.0)
        assert took < TTL_S / 2


async def test_sees_the_worker_again_after_redis_restarts(
    redis_url: str, redis_process: RedisProcess
) -> None:
    """After a restart (empty data) the view reconnects and sees the re-registered worker."""
    async with (
        RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view,
        announcing(redis_url, "gpu0"),
    ):
        await until(view, lambda: "gpu0" in view.workers(), within=2.0)
        redis_process.restart()
        restarted_at = time.time()
        await until(
            view,
            lambda: (
                view.redis_ok()
                and "gpu0" in view.workers()
                and view.workers()["gpu0"].last_heartbeat > restarted_at
            ),
            within=5.0,
        )


async def test_turns_keyspace_notifications_on_after_a_restart_without_them(
    redis_url: str, redis_process: RedisProcess
) -> None:
    """A server that comes back with notifications off gets them on again from the view."""
    async with RegistryView(
        redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S, stale_after_s=NO_RECONCILE_S
    ) as view:
        redis_process.restart()
        # Before the loop runs again: the restarted server has notifications off.
        plain = redis.Redis.from_url(redis_url, socket_timeout=5)
        plain.config_set("notify-keyspace-events", "")
        plain.close()
        async with announcing(redis_url, "gpu0"):
            await until(view, lambda: "gpu0" in view.workers(), within=5.0)
        # Only an `expired` event can remove it: no reconcile is due, nothing is stale yet.
        await until(view, lambda: "gpu0" not in view.workers(), within=TTL_S + 2.0)


async def test_enables_notifications_keeping_flags_already_set(redis_url: str) -> None:
    """On a server with other flags set, the view adds its own and keeps the others."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        await client.config_set("notify-keyspace-events", "E$")
        async with RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view:
            flags = await notify_flags(client)
            assert set("KE$") <= set(flags)
            assert set("ghxsz") <= set(flags) or "A" in flags
            async with announcing(redis_url, "gpu0"):
                await until(view, lambda: "gpu0" in view.workers(), within=2.0)
    finally:
        await client.config_set("notify-keyspace-events", "Kghxsz")
        await client.aclose()


async def test_without_config_rights_the_view_discovers_by_reconcile(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """If CONFIG is refused (ACL) and notifications are off, reconciles still find workers."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    await client.config_set("notify-keyspace-events", "")
    await client.acl_setuser(
        "viewer",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-config"],
    )
    viewer_url = redis_url.replace("redis://", "redis://viewer:secret@")
    try:
        async with RegistryView(viewer_url, FALLBACK, reconcile_s=0.1) as view:
            assert view.redis_ok()
            async with announcing(redis_url, "gpu0"):
                await until(view, lambda: "gpu0" in view.workers(), within=2.0)
        assert any("keyspace notifications" in r.getMessage() for r in caplog.records)
        assert await notify_flags(client) == ""
    finally:
        await client.acl_deluser("viewer")
        await client.config_set("notify-keyspace-events", "Kghxsz")
        await client.aclose()


async def test_a_read_only_redis_user_is_enough_for_the_view(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without write rights the index cleanup is skipped (logged once); discovery still works."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    await client.acl_setuser(
        "reader",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-@write"],
    )
    reader_url = redis_url.replace("redis://", "redis://reader:secret@")
    try:
        async with (
            RegistryView(reader_url, FALLBACK, reconcile_s=0.05) as view,
            announcing(redis_url, "gpu0"),
        ):
            await until(view, lambda: "gpu0" in view.workers(), within=2.0)
            await asyncio.sleep(0.2)  # several reconciles
            assert view.redis_ok()
        cleanup = [r for r in caplog.records if "cannot clean" in r.getMessage()]
        assert len(cleanup) == 1
    finally:
        await client.acl_deluser("reader")
        await client.aclose()


async def test_drained_set_and_routing_changes_reach_the_view(redis_url: str) -> None:
    """Admin writes to `workers:drained` and `routing:strategy` arrive through events."""
    async with (
        RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view,
        RegistryAdmin(redis_url) as admin,
    ):
        assert view.routing() == FALLBACK
        await admin.drain("gpu1")
        await until(view, lambda: view.drained() == frozenset({"gpu1"}), within=2.0)
        wanted = RoutingSettings(strategy=Strategy.PRIORITY, overflow_threshold=2)
        await admin.set_routing(wanted)
        await until(view, lambda: view.routing() == wanted, within=2.0)
        await admin.undrain("gpu1")
        await until(view, lambda: view.drained() == frozenset(), within=2.0)
        await admin.clear_routing()
        await until(view, lambda: view.routing() == FALLBACK, within=2.0)


async def test_partial_routing_hash_is_decoded_over_the_fallback(redis_url: str) -> None:
    """Fields missing from the hash keep the configured values."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        async with RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view:
            await client.hset(keys.ROUTING, "load_balancing_strategy", "least_loaded")
            await until(view, lambda: view.routing().strategy is Strategy.LEAST_LOADED, 2.0)
            assert view.routing().overflow_threshold == FALLBACK.overflow_threshold
    finally:
        await client.aclose()


async def test_undecodable_routing_hash_falls_back_to_config(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A routing hash with a bad strategy gives the configured routing, and a log line."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        async with RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view:
            await client.hset(keys.ROUTING, "load_balancing_strategy", "least_loaded")
            await until(view, lambda: view.routing().strategy is Strategy.LEAST_LOADED, 2.0)
            await client.hset(keys.ROUTING, "load_balancing_strategy", "fastest_please")
            await until(view, lambda: view.routing() == FALLBACK, within=2.0)
        assert any(keys.ROUTING in r.getMessage() for r in caplog.records)
    finally:
        await client.aclose()


async def test_undecodable_worker_record_is_skipped_and_named_in_the_log(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken worker hash is left out (logged with its name); good workers stay."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        async with (
            RegistryView(redis_url, FALLBACK, reconcile_s=0.1) as view,
            announcing(redis_url, "good"),
        ):
            broken = record("broken").encode() | {"capabilities": "{not json"}
            await client.hset(keys.worker_key("broken"), mapping=hash_fields(broken))
            await client.zadd(keys.LIVE_INDEX, {"broken": time.time()})
            await until(view, lambda: "good" in view.workers(), within=2.0)
            await asyncio.sleep(0.3)  # a few reconciles have read the broken one too
            assert set(view.workers()) == {"good"}
        logged = [r for r in caplog.records if "undecodable worker" in r.getMessage()]
        assert logged and logged[0].__dict__.get("worker") == "broken"
        assert len(logged) == 1  # once, not once per reconcile
    finally:
        await client.aclose()


async def test_view_never_issues_keys_or_scan(redis_url: str) -> None:
    """Events plus many reconciles run without a single KEYS or SCAN on the server."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        await client.config_resetstat()
        async with (
            RegistryView(redis_url, FALLBACK, reconcile_s=0.05) as view,
            announcing(redis_url, "gpu0"),
            announcing(redis_url, "gpu1"),
        ):
            await until(view, lambda: set(view.workers()) == {"gpu0", "gpu1"}, 2.0)
            await asyncio.sleep(0.5)  # ~10 reconciles and ~5 heartbeats per worker
        stats = await client.info("commandstats")
        assert "cmdstat_hgetall" in stats and "cmdstat_zrangebyscore" in stats
        assert "cmdstat_keys" not in stats
        assert "cmdstat_scan" not in stats
    finally:
        await client.aclose()


async def test_keeps_its_snapshot_while_redis_is_down_until_workers_go_stale(
    redis_url: str, redis_process: RedisProcess
) -> None:
    """Redis down: redis_ok() is False, workers stay until their heartbeat is stale_after_s old."""
    stale_after = 1.0
    async with RegistryView(
        redis_url, FALLBACK, reconcile_s=0.1, stale_after_s=stale_after
    ) as view:
        async with announcing(redis_url, "gpu0"):
            await until(view, lambda: "gpu0" in view.workers(), within=2.0)
            redis_process.stop()
        last_beat = view.workers()["gpu0"].last_heartbeat
        await until(view, lambda: not view.redis_ok(), within=2.0)
        assert "gpu0" in view.workers()
        await until(view, lambda: "gpu0" not in view.workers(), within=stale_after + 2.0)
        assert time.time() - last_beat >= stale_after
        redis_process.restart()
        await until(view, view.redis_ok, within=5.0)


async def test_snapshot_is_immutable(redis_url: str) -> None:
    """workers() hands out a read-only mapping."""
    async with RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view:
        with pytest.raises(TypeError):
            view.workers()["x"] = record("x")  # type: ignore[index]


async def test_wait_for_change_returns_the_current_version_on_timeout(redis_url: str) -> None:
    """With nothing changing, wait_for_change returns after its timeout with the same version."""
    async with RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S) as view:
        before = view.version
        assert await view.wait_for_change(before, timeout=0.1) == before


async def test_stop_cancels_the_watcher_task(redis_url: str) -> None:
    """After stop() no task of the view is left running."""
    view = RegistryView(redis_url, FALLBACK, reconcile_s=NO_RECONCILE_S)
    await view.start()
    assert any(t.get_name() == "registry-view" for t in asyncio.all_tasks())
    await view.stop()
    assert not any(t.get_name() == "registry-view" for t in asyncio.all_tasks())


async def test_starts_with_redis_down_and_connects_when_it_comes_up(
    redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A view started before Redis reports redis_ok() False, warns once, then catches up."""
    caplog.set_level(logging.INFO, logger="duplex.registry.view")
    redis_process.stop()
    async with RegistryView(redis_process.url, FALLBACK, reconcile_s=0.1) as view:
        assert not view.redis_ok()
        await asyncio.sleep(0.5)  # several failed attempts
        redis_process.restart()
        await until(view, view.redis_ok, within=5.0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ("", "Kghxsz"),
        ("Kghxsz", None),
        ("AK", None),
        ("E$", "E$Kghxsz"),
        ("Kg", "Kghxsz"),
    ],
)
def test_merge_flags_adds_only_what_is_missing(current: str, expected: str | None) -> None:
    """The notify-keyspace-events merge keeps existing flags and understands the `A` alias."""
    assert _merge_flags(current) == expected


async def test_steering_survives_a_redis_restart_with_append_only_persistence() -> None:
    """The strategy, its parameters and drain flags: kept by the view while Redis is down, and
    read back after it restarts from its append-only file (as compose runs it)."""
    server = start_redis(persistent=True)
    steered = replace(FALLBACK, strategy=Strategy.PRIORITY, overflow_threshold=3)
    assert steered != FALLBACK
    try:
        async with RegistryAdmin(server.url) as admin:
            await admin.set_routing(steered)
            await admin.drain("gpu1")
        async with RegistryView(server.url, FALLBACK, reconcile_s=0.1) as view:
            await until(view, lambda: view.routing() == steered, within=2.0)
            assert view.drained() == {"gpu1"}
            server.stop()  # SIGTERM: Redis writes its append-only file and exits
            await until(view, lambda: not view.redis_ok(), within=2.0)
            assert view.routing() == steered and view.drained() == {"gpu1"}
            server.restart()
            await until(view, view.redis_ok, within=5.0)
            await asyncio.sleep(0.3)  # a reconcile or two after the restart
            assert view.routing() == steered and view.drained() == {"gpu1"}
    finally:
        server.stop()
