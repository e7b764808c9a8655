"""The orchestrator killed (kill -9) and restarted under live sessions.

Real processes: a tone worker and `python -m duplex.orchestrator`. Clients mid-utterance must
see `SessionEnded` or a closed socket, never a hang; the worker must release every session
the dead orchestrator held (its announced `active_sessions` falls back to 0); a restarted
orchestrator serves new sessions.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from bench.procs import fresh_metrics, start_orchestrator
from tests.faults.stack import running_stack
from tests.faults.timing import TimedClient

SESSIONS = 4
SENTENCE = "This answer is cut short when its orchestrator dies. "  # 3.1 s
CLOSED_LIMIT_S = 10.0
RELEASE_LIMIT_S = 15.0


async def active_sessions(redis_url: str, worker: str) -> int:
    metrics = await fresh_metrics(redis_url, worker, time.time())
    assert metrics is not None
    return metrics.active_sessions


async def test_clients_of_a_killed_orchestrator_see_the_end_and_workers_release_sessions(
    redis_url: str, tmp_path: Path, figures: Any
) -> None:
    """kill -9 mid-utterance: every socket closes in time; active_sessions returns to 0."""
    async with running_stack(redis_url, tmp_path) as stack:
        clients = [TimedClient(stack.url) for _ in range(SESSIONS)]
        for client in clients:
            await client.__aenter__()
        try:
            for client in clients:
                await client.start(model_id="tone-fast")
                await client.text(SENTENCE * 4, is_final=True)
            for client in clients:
                await client.wait_for(lambda got: len(got.utterance(0).frames) >= 10)
            held = await active_sessions(redis_url, "w1")
            stack.orchestrator.managed.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            # No hang: each client's socket ends (a closed socket is all a killed process
            # can give; a graceful stop sends SessionEnded first).
            async with asyncio.timeout(CLOSED_LIMIT_S):
                while True:
                    if all(c.closed for c in clients):
                        break
                    await asyncio.sleep(0.02)
            closed_after = time.monotonic() - killed
            async with asyncio.timeout(RELEASE_LIMIT_S):
                while True:
                    if (left := await active_sessions(redis_url, "w1")) == 0:
                        break
                    await asyncio.sleep(0.1)
            released_after = time.monotonic() - killed
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)
        stack.orchestrator.managed.stop()
        # A restarted orchestrator serves new sessions with the same worker.
        stack.orchestrator = await start_orchestrator(redis_url, tmp_path)
        async with TimedClient(stack.url) as client:
            assert (await client.start(model_id="tone-fast"))["worker"] == "w1"
            assert len((await client.say("Back again.")).frames) > 0
            restarted_ok = True
    figures(
        sessions=SESSIONS,
        sockets_closed_after_s=round(closed_after, 2),
        worker_released_after_s=round(released_after, 2),
    )
    print(
        f"\norchestrator kill -9 with {held} live sessions: sockets closed after "
        f"{closed_after:.2f} s, worker released them after {released_after:.2f} s"
    )
    assert held == SESSIONS and left == 0 and restarted_ok
