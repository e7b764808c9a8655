"""Redis stopped for a while and restarted (empty, without keyspace notifications) under load.

Real processes: redis-server, a tone worker and `python -m duplex.orchestrator`. A session
speaking across the outage is not dropped; a session started during the outage is served
from the last known view or refused with a clear Error; after the restart the workers are
back within a heartbeat and the orchestrator's view turns keyspace notifications on again.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from duplex.devtools.redis_server import RedisProcess, find_redis_server, start_redis

from bench.procs import HEARTBEAT_MS, read_worker_record
from tests.faults.conftest import FaultScale
from tests.faults.stack import running_stack
from tests.faults.timing import TimedClient, worst_gap_ms

SENTENCE = "The registry went away for a while, and this voice went on regardless. "  # 4.3 s


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server this test may stop and restart."""
    server = start_redis()
    yield server
    server.stop(kill=True)


def restart_plain(server: RedisProcess) -> None:
    """The same port, an empty dataset and redis' own defaults (notifications off): what a
    restarted Redis without our command line looks like."""
    server.process = subprocess.Popen(
        [find_redis_server(), "--port", str(server.port), "--bind", "127.0.0.1", "--save", "",
         "--dir", server.workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def worker_announced(url: str, name: str) -> bool:
    try:
        return read_worker_record(url, name) is not None
    except redis.RedisError:  # still starting
        return False


def notify_flags(url: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=1.0)
    try:
        return str(client.config_get("notify-keyspace-events").get("notify-keyspace-events", ""))
    except redis.RedisError:
        return ""
    finally:
        client.close()


async def test_a_redis_outage_drops_no_session_and_the_registry_comes_back(
    own_redis: RedisProcess, tmp_path: Path, scale: FaultScale, figures: Any
) -> None:
    url = own_redis.url
    async with running_stack(url, tmp_path) as stack, TimedClient(stack.url) as speaking:
        await speaking.start(model_id="tone-fast")
        repeats = 2 + int(scale.redis_outage_s / 4)
        await speaking.text(SENTENCE * repeats, is_final=True)
        await speaking.wait_for(lambda got: len(got.utterance(0).frames) >= 10)
        own_redis.stop(kill=True)
        down_at = time.monotonic()
        await asyncio.sleep(scale.redis_outage_s / 2)
        # A new session in the middle of the outage.
        async with TimedClient(stack.url) as newcomer:
            reply = await newcomer.start(model_id="tone-fast")
            if reply["type"] == "SessionStarted":
                served = len((await newcomer.say("Still here.")).frames) > 0
            else:
                served = False
                assert reply["type"] == "Error" and reply["code"] in (
                    "NO_WORKER_AVAILABLE",
                    "WORKER_FAILED",
                ), reply
                assert reply["message"], reply
        await asyncio.sleep(max(0.0, scale.redis_outage_s - (time.monotonic() - down_at)))
        restart_plain(own_redis)
        up_at = time.monotonic()
        while not await asyncio.to_thread(worker_announced, url, "w1"):
            assert time.monotonic() - up_at < 10, "the worker did not come back"
            await asyncio.sleep(0.02)
        worker_back_s = time.monotonic() - up_at
        while "K" not in notify_flags(url):
            assert time.monotonic() - up_at < 10, "keyspace notifications not re-enabled"
            await asyncio.sleep(0.05)
        notify_back_s = time.monotonic() - up_at
        flags = notify_flags(url)
        gap = worst_gap_ms(speaking.frame_times, after=down_at)
        assert not speaking.closed
        assert not speaking.got.of_type("Error") and not speaking.got.of_type("SessionEnded")
        # New sessions after the restart are routed from the rebuilt view.
        async with TimedClient(stack.url) as after:
            assert (await after.start(model_id="tone-fast"))["type"] == "SessionStarted"
    figures(
        outage_s=scale.redis_outage_s,
        newcomer_during_outage="served" if served else "refused",
        worker_back_after_s=round(worker_back_s, 2),
        heartbeat_s=HEARTBEAT_MS / 1000,
        notifications_back_after_s=round(notify_back_s, 2),
        speaking_worst_gap_ms=gap,
    )
    print(
        f"\nRedis down {scale.redis_outage_s:.0f} s: the speaking session went on (worst frame "
        f"gap {gap} ms); a new session was {'served' if served else 'refused'}; worker back "
        f"{worker_back_s:.2f} s after the restart (heartbeat {HEARTBEAT_MS / 1000:.1f} s), "
        f"notifications {flags!r} back after {notify_back_s:.2f} s"
    )
    assert all(f in flags for f in "Kghxsz") or "A" in flags
