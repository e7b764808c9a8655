"""Three hosts and a fourth on one machine, each a network namespace on one bridge (veth pairs,
iproute2): Redis and orchestrator A on h1, tone workers w1, w2 on h2 and w3, w4 on h3 (each
announcing the address it found on its route to Redis: `advertise_host: auto`), orchestrator B
on h4. Every process is a real `python -m duplex...` inside its namespace; the test's own
sockets are made inside h1 and h4, so no packet leaves the namespaces.

In order: sessions from both orchestrators land on both worker hosts and a burst of 12 splits
3/3/3/3; h3's link goes down mid-utterance: w3 and w4 leave routing within worker_ttl_ms and
their sessions fail over to h2 with no text lost; the link comes back: w3 and w4 rejoin.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from duplex.devtools.redis_server import find_redis_server
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.multihost_netns import Fabric, netns_available
from tests.integration.orchestrator_fixtures import tone_frames

KEY = "netns-key"
TTL_MS = 1500
HEARTBEAT_MS = 300
RECONCILE_MS = 200
ORCH_PORT = 8080
WORKERS = {"w1": ("h2", 7001), "w2": ("h2", 7002), "w3": ("h3", 7001), "w4": ("h3", 7002)}
TEXT = (
    "Across the hosts we go, one clause at a time, "
    "and every word arrives, "
    "even when a cable is pulled."
)


@dataclass
class Fleet:
    fabric: Fabric
    orchestrators: dict[str, str]  # host -> address


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    why = netns_available()
    if why is not None:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("netns")
    fabric = Fabric.create(["h1", "h2", "h3", "h4"])
    try:
        redis_host = fabric.hosts["h1"]
        redis_url = f"redis://{redis_host}:6379/0"
        fabric.spawn("h1", [find_redis_server(), "--port", "6379", "--bind", redis_host,
                            "--save", "", "--appendonly", "no",
                            "--notify-keyspace-events", "Kghxsz"])  # fmt: skip
        for name, (host, port) in WORKERS.items():
            path = folder / f"{name}.yaml"
            path.write_text(yaml.safe_dump(worker_yaml(name, port, redis_url)))
            fabric.spawn(host, [sys.executable, "-m", "duplex.worker", "--config", str(path)])
        orchestrators = {}
        for host in ("h1", "h4"):
            address = fabric.hosts[host]
            path = folder / f"orchestrator-{host}.yaml"
            path.write_text(yaml.safe_dump(orchestrator_yaml(address, redis_url)))
            fabric.spawn(host, [sys.executable, "-m", "duplex.orchestrator", "--config", str(path)])
            orchestrators[host] = address
        yield Fleet(fabric, orchestrators)
    finally:
        fabric.close()


def worker_yaml(name: str, port: int, redis_url: str) -> dict[str, Any]:
    return {
        "worker": {"name": name, "grpc_port": port, "adapter_type": "tone", "host": "0.0.0.0",
                   "advertise_host": "auto", "metrics_port": -1, "use_cuda": False,
                   "inference_threads": 1, "drain_grace_s": 1.0},
        "model_manager": {"default_model_id": "tone-fast"},
        "redis": {"url": redis_url, "heartbeat_interval_ms": HEARTBEAT_MS,
                  "worker_ttl_ms": TTL_MS},
    }  # fmt: skip


def orchestrator_yaml(address: str, redis_url: str) -> dict[str, Any]:
    return {
        "transport": {"websocket": {"host": address, "port": ORCH_PORT},
                      "webrtc": {"enabled": False}},
        "redis": {"url": redis_url, "reconcile_interval_ms": RECONCILE_MS,
                  "worker_ttl_ms": TTL_MS},
        "session": {"frame_timeout_s": 1.0},
        "auth": {"api_keys": [KEY]},
    }  # fmt: skip


async def get_json(fleet: Fleet, host: str, path: str) -> dict[str, Any]:
    """GET `path` on the orchestrator of `host`, from inside `host`."""
    address = (fleet.orchestrators[host], ORCH_PORT)
    sock = await asyncio.to_thread(fleet.fabric.connect, host, address)
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
        async with asyncio.timeout(5):
            raw = await reader.read()
    finally:
        writer.close()
    body = raw.split(b"\r\n\r\n", 1)[1]
    result: dict[str, Any] = json.loads(body)
    return result


async def usable_workers(fleet: Fleet, host: str) -> int:
    try:
        return int((await get_json(fleet, host, "/ready")).get("workers", 0))
    except (OSError, ValueError, IndexError, TimeoutError):
        return -1  # not up yet


async def until_workers(fleet: Fleet, count: int, limit_s: float) -> float:
    """Seconds until both orchestrators route to exactly `count` workers."""
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        while True:
            seen = [await usable_workers(fleet, h) for h in fleet.orchestrators]
            if seen == [count] * len(seen):
                return time.monotonic() - started
            await asyncio.sleep(0.05)


@dataclass
class Session:
    """One WebSocket session opened from inside an orchestrator's host."""

    ws: ClientConnection
    started: dict[str, Any]
    frames: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        async for message in self.ws:
            if isinstance(message, bytes):
                self.frames += 1
            else:
                self.messages.append(json.loads(message))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


async def open_session(fleet: Fleet, host: str) -> Session:
    address = (fleet.orchestrators[host], ORCH_PORT)
    sock = await asyncio.to_thread(fleet.fabric.connect, host, address)
    ws = await connect(f"ws://{address[0]}:{ORCH_PORT}/", sock=sock, proxy=None,
                       additional_headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    await ws.send(json.dumps({"type": "SessionStart", "model_id": "tone-fast"}))
    async with asyncio.timeout(10):
        started = json.loads(await ws.recv())
    assert started["type"] == "SessionStarted", started
    session = Session(ws, started)
    session.reader = asyncio.create_task(session.read())
    return session


async def open_one_by_one(fleet: Fleet, count: int) -> list[Session]:
    """Sessions alternating between the orchestrators, 100 ms apart: each decision sees the
    earlier ones through the shared counts (Redis), not only through the heartbeats."""
    sessions = []
    for i in range(count):
        sessions.append(await open_session(fleet, ("h1", "h4")[i % 2]))
        await asyncio.sleep(0.1)
    return sessions


async def close_all(sessions: list[Session]) -> None:
    for session in sessions:
        await session.ws.close()
        if session.reader is not None:
            session.reader.cancel()
            await asyncio.gather(session.reader, return_exceptions=True)


async def until(predicate: Callable[[], bool], limit_s: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        while True:
            if predicate():
                return time.monotonic() - started
            await asyncio.sleep(0.02)


async def test_sessions_from_both_orchestrators_split_evenly_over_both_worker_hosts(
    fleet: Fleet,
) -> None:
    waited = await until_workers(fleet, 4, limit_s=90)
    print(f"fleet up: both orchestrators route to 4 workers after {waited:.1f} s")
    await asyncio.sleep(3 * RECONCILE_MS / 1000)  # each orchestrator has seen the other
    sessions = await asyncio.gather(*(open_session(fleet, ("h1", "h4")[i % 2]) for i in range(12)))
    try:
        split = Counter(s.started["worker"] for s in sessions)
        by_orch = {h: Counter(s.started["worker"] for s in sessions[i::2])
                   for i, h in enumerate(("h1", "h4"))}  # fmt: skip
        print(f"burst of 12: {dict(split)}; per orchestrator {by_orch}")
        assert split == dict.fromkeys(WORKERS, 3)
        for counts in by_orch.values():
            hosts = {WORKERS[w][0] for w in counts}
            assert hosts == {"h2", "h3"}
    finally:
        await close_all(sessions)


async def test_a_cut_off_worker_host_leaves_routing_and_its_sessions_fail_over(
    fleet: Fleet,
) -> None:
    await until_workers(fleet, 4, limit_s=30)
    # The last test's sessions are gone from the workers' heartbeats.
    await asyncio.sleep(3 * HEARTBEAT_MS / 1000)
    # Four sessions, one per worker (an even split), all speaking.
    sessions = await open_one_by_one(fleet, 4)
    try:
        assert {s.started["worker"] for s in sessions} == set(WORKERS)
        for session in sessions:
            await session.ws.send(json.dumps({"type": "TextChunk", "text": TEXT, "is_final": True}))
        await until(lambda: all(s.frames >= 25 for s in sessions), limit_s=15)
        cut_at = time.monotonic()
        fleet.fabric.cut("h3")
        gone_s = await until_workers(fleet, 2, limit_s=TTL_MS / 1000 + 5)
        left_after = time.monotonic() - cut_at
        print(f"h3 cut off: its workers left routing after {left_after * 1000:.0f} ms "
              f"(worker_ttl_ms {TTL_MS})")  # fmt: skip
        assert gone_s >= 0
        assert left_after <= (TTL_MS + 2 * RECONCILE_MS) / 1000 + 1.0
        try:
            await until(lambda: all(s.of_type("AudioEnd") for s in sessions), limit_s=30)
        except TimeoutError:
            for s in sessions:
                print(s.started["worker"], s.frames, s.messages)
            raise
        expected = tone_frames(TEXT)
        longest_clause = max(tone_frames(c) for c in TEXT.split(", "))
        for session in sessions:
            failovers = session.of_type("WorkerFailover")
            moved = WORKERS[session.started["worker"]][0] == "h3"
            print(f"{session.started['worker']}: {session.frames} frames "
                  f"(text {expected}), failovers {failovers}")  # fmt: skip
            assert not session.of_type("Error"), session.messages
            if moved:
                assert len(failovers) == 1 and WORKERS[failovers[0]["to"]][0] == "h2"
            else:
                assert failovers == []
            # No text lost: all of it voiced; at most the cut clause heard twice.
            assert expected <= session.frames <= expected + longest_clause
    finally:
        await close_all(sessions)


async def test_the_restored_host_rejoins(fleet: Fleet) -> None:
    fleet.fabric.restore("h3")
    waited = await until_workers(fleet, 4, limit_s=30)
    print(f"h3 restored: w3 and w4 route again after {waited * 1000:.0f} ms")
    await asyncio.sleep(3 * HEARTBEAT_MS / 1000)
    sessions = await open_one_by_one(fleet, 4)
    try:
        assert {s.started["worker"] for s in sessions} == set(WORKERS)
    finally:
        await close_all(sessions)
