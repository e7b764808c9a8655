"""A client that stops reading: the orchestrator's memory for it stays bounded, it is closed,
and the other sessions keep their audio.

Real processes (orchestrator, tone worker); the stalled client is a real WebSocket whose
socket has a tiny receive buffer and that never reads. The orchestrator notices only once a
send has blocked for its send deadline (5 s), that is after the kernel's send buffer for the
socket is full: up to 4 MiB, about 45 s of 48 kHz audio. So the short form watches 8 s of the
stall (memory flat, others unaffected) and only the full form waits for the close.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.faults.conftest import FaultScale
from tests.faults.stack import running_stack
from tests.faults.timing import TimedClient, worst_gap_ms

SENTENCE = "Someone is listening to this and someone else has stopped listening. "  # 4 s
CLOSE_LIMIT_S = 120.0
SHORT_STALL_S = 8.0


def small_socket(url: str) -> socket.socket:
    parsed = urlparse(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((parsed.hostname or "127.0.0.1", parsed.port or 80))
    return sock


async def test_a_client_that_stops_reading_is_closed_and_others_are_unaffected(
    redis_url: str, tmp_path: Path, scale: FaultScale, figures: Any
) -> None:
    """RSS stays flat while a client stalls, others play on; (full form) it is closed."""
    async with running_stack(redis_url, tmp_path) as stack:
        orch = stack.orchestrator.managed
        async with TimedClient(stack.url) as healthy:
            await healthy.start(model_id="tone-fast")
            await healthy.text(SENTENCE * 12, is_final=True)
            rss_before = orch.sampler.rss
            orch.sampler.reset_peak()
            stalled = await connect(
                stack.url, proxy=None, sock=small_socket(stack.url), max_queue=1, max_size=None
            )
            await stalled.send(json.dumps({"type": "SessionStart", "model_id": "tone-fast"}))
            reply = json.loads(await asyncio.wait_for(stalled.recv(), 20))
            assert reply["type"] == "SessionStarted", reply
            await stalled.send(
                json.dumps({"type": "TextChunk", "text": SENTENCE * 12, "is_final": True})
            )
            began = time.monotonic()
            # Never read again: (full form) wait for the server to give up on it.
            limit = CLOSE_LIMIT_S if scale.full else SHORT_STALL_S
            while time.monotonic() - began < limit and orch.alive():
                await asyncio.sleep(0.1)
                if _server_dropped(stalled):
                    break
            closed = _server_dropped(stalled)
            closed_after = time.monotonic() - began
            peak_growth = orch.sampler.peak_rss - rss_before
            gap = worst_gap_ms(healthy.frame_times, after=began)
            heard = len(healthy.frame_times)
            await healthy.wait_for(lambda got: len(healthy.frame_times) >= heard + 10)
            assert not healthy.got.of_type("Error")
        if closed:
            close_code, close_reason = await _drain_close(stalled)
        else:  # the short form ends the stall itself: no need to read megabytes of audio
            stalled.transport.abort()
            close_code, close_reason = None, ""
    figures(
        stalled_closed_after_s=round(closed_after, 2) if closed else None,
        orchestrator_rss_growth_kb=peak_growth // 1024,
        healthy_worst_gap_ms=gap,
        close_code=close_code,
        close_reason=close_reason,
    )
    state = f"closed after {closed_after:.1f} s" if closed else f"open after {closed_after:.1f} s"
    print(
        f"\nstalled reader {state} (close code {close_code}, reason {close_reason!r}); "
        f"orchestrator RSS +{peak_growth // 1024} KiB; healthy worst frame gap {gap} ms"
    )
    assert peak_growth < 32 * 1024 * 1024  # bounded: no buffer grows with the stall
    assert closed or not scale.full


def _server_dropped(ws: Any) -> bool:
    """The server closed its side (a FIN or a close frame is waiting behind the unread
    audio), seen without reading the audio."""
    transport = ws.transport
    return bool(transport is None or transport.is_closing() or ws.protocol.close_rcvd)


async def _drain_close(ws: Any) -> tuple[int | None, str]:
    """Read whatever is left; the close code and reason the server sent (None: none)."""
    try:
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
    except (ConnectionClosed, TimeoutError):
        pass
    finally:
        await ws.close()
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")
