"""A client that stops reading: the orchestrator's memory for it stays bounded, it is closed
with a reason, and the other sessions keep their audio.

Real processes (orchestrator, tone worker); a stalled client is a real WebSocket whose socket
has a tiny receive buffer and that stops reading. The orchestrator samples the bytes queued
toward it (its transport's buffer and the kernel's) and, once they stay above
`max_client_backlog_ms` (3 s of audio) for 2 s, ends the session and queues `Error
CLIENT_TOO_SLOW`, `SessionEnded` and close 1008 "client not reading" behind the audio. The
test watches `/metrics` for that, then reads again and must find them. The full form also
stalls a second client that never reads again: the orchestrator must abort its socket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.procs import OrchestratorProcess, http_get
from tests.faults.conftest import FaultScale
from tests.faults.stack import running_stack
from tests.faults.timing import TimedClient, worst_gap_ms

SENTENCE = "Someone is listening to this and someone else has stopped listening. "  # 4 s
BASELINE_S = 3.0
SETTLE_S = 1.0  # between the close and the read, so a gap says which of the two caused it
CLOSE_LIMIT_S = 30.0  # detection is a few seconds; this only bounds a failing run
POLL_S = 0.25  # light: this process also times the healthy session's frames
NOT_READING = "duplex_orch_ws_clients_not_reading_total"
ABORT_AFTER_S = 5.0 + 1.0  # the orchestrator's close flush time, and a margin


def small_socket(url: str) -> socket.socket:
    parsed = urlparse(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((parsed.hostname or "127.0.0.1", parsed.port or 80))
    return sock


async def stalled_client(url: str) -> ClientConnection:
    """A session with 48 s of audio coming, whose client reads nothing after SessionStarted."""
    ws = await connect(url, proxy=None, sock=small_socket(url), max_queue=1, max_size=None)
    await ws.send(json.dumps({"type": "SessionStart", "model_id": "tone-fast"}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert reply["type"] == "SessionStarted", reply
    await ws.send(json.dumps({"type": "TextChunk", "text": SENTENCE * 12, "is_final": True}))
    return ws


async def test_a_client_that_stops_reading_is_closed_with_a_reason_and_others_are_unaffected(
    redis_url: str, tmp_path: Path, scale: FaultScale, figures: Any
) -> None:
    """Closed 1008 within seconds, RSS flat, others play on; (full form) a client that never
    reads again has its socket aborted."""
    async with running_stack(redis_url, tmp_path) as stack:
        orch = stack.orchestrator.managed
        async with TimedClient(stack.url) as healthy:
            await healthy.start(model_id="tone-fast")
            await healthy.text(SENTENCE * 12, is_final=True)
            await healthy.wait_for(lambda got: len(healthy.frame_times) >= 1)
            # The same run's baseline: the healthy session alone on this (busy) machine.
            quiet_from = time.monotonic()
            await asyncio.sleep(BASELINE_S)
            baseline_gap = worst_gap_ms(healthy.frame_times, after=quiet_from)
            rss_before = orch.sampler.rss
            orch.sampler.reset_peak()
            stalled = await stalled_client(stack.url)
            gone = await stalled_client(stack.url) if scale.full else None
            began = time.monotonic()
            want = 2 if gone is not None else 1
            closed = False
            while time.monotonic() - began < CLOSE_LIMIT_S and orch.alive():
                await asyncio.sleep(POLL_S)
                if await _not_reading_count(stack.orchestrator) >= want:
                    closed = True
                    break
            closed_after = time.monotonic() - began
            await asyncio.sleep(SETTLE_S)
            # The client reads again: the rest of its audio, then the goodbye.
            texts, close_code, close_reason = await _drain(stalled)
            aborted = None
            if gone is not None:
                await asyncio.sleep(
                    max(0.0, closed_after + ABORT_AFTER_S - (time.monotonic() - began))
                )
                _, gone_code, _ = await _drain(gone)
                aborted = gone_code is None  # reset: no close frame ever reached it
            peak_growth = orch.sampler.peak_rss - rss_before
            gap = worst_gap_ms(healthy.frame_times, after=began)
            gap_at = _worst_gap_at(healthy.frame_times, began)
            heard = len(healthy.frame_times)
            await healthy.wait_for(lambda got: len(healthy.frame_times) >= heard + 10)
            assert not healthy.got.of_type("Error")
    figures(
        stalled_closed_after_s=round(closed_after, 2) if closed else None,
        orchestrator_rss_growth_kb=peak_growth // 1024,
        healthy_worst_gap_ms=gap,
        healthy_worst_gap_before_stall_ms=baseline_gap,
        healthy_worst_gap_at_s=gap_at,
        close_code=close_code,
        close_reason=close_reason,
        never_reading_client_aborted=aborted,
    )
    print(
        f"\nstalled reader closed after {closed_after:.1f} s (close code {close_code}, "
        f"reason {close_reason!r}); orchestrator RSS +{peak_growth // 1024} KiB; "
        f"healthy worst frame gap {gap} ms at {gap_at} s into the stall "
        f"({baseline_gap} ms in the {BASELINE_S:.0f} s before it)"
        + ("" if aborted is None else f"; never-reading client aborted: {aborted}")
    )
    assert closed
    assert (close_code, close_reason) == (1008, "client not reading")
    errors = [t for t in texts if t.get("type") == "Error"]
    assert [e["code"] for e in errors] == ["CLIENT_TOO_SLOW"], texts
    assert {"type": "SessionEnded", "reason": "client_not_reading"}.items() <= texts[-1].items()
    assert peak_growth < 32 * 1024 * 1024  # bounded: no buffer grows with the stall
    assert aborted is not False


def _worst_gap_at(times: list[float], began: float) -> float:
    """When (s after ``began``) the healthy session's longest gap between frames ended: to
    tell a stall caused by the close (about `closed_after`) from the machine's noise."""
    picked = [t for t in times if t >= began]
    if len(picked) < 2:
        return 0.0
    _, end = max(itertools.pairwise(picked), key=lambda pair: pair[1] - pair[0])
    return round(end - began, 2)


async def _not_reading_count(orch: OrchestratorProcess) -> float:
    status, body = await asyncio.to_thread(http_get, f"{orch.http_url}/metrics", 2.0)
    if status != 200:
        return 0.0
    at = body.find(b"\n" + NOT_READING.encode() + b" ")
    if at < 0:
        return 0.0
    return float(body[at:].split(maxsplit=2)[1])


async def _drain(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None, str]:
    """Read whatever is left: the JSON messages, and the close code and reason the server
    sent (None: none came, the connection was reset)."""
    texts: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(10):
            async for message in ws:
                if isinstance(message, str):
                    texts.append(json.loads(message))
    except (ConnectionClosed, TimeoutError, OSError):
        pass
    finally:
        await ws.close()
    rcvd = ws.protocol.close_rcvd
    return texts, (rcvd.code if rcvd is not None else None), (rcvd.reason if rcvd else "")
