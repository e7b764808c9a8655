"""FrameBatcher: several frames per gRPC message without changing order or the client's lead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from duplex.worker.batching import Batch, FrameBatcher, session_lead_ms
from duplex.worker.session_messages import FrameEvent, SessionEvent, UtteranceEndEvent


def _frame(seq: int) -> FrameEvent:
    return FrameEvent(b"\x00\x00" * 4, 48000, seq, 0, 0, 5, False)


def _end(frames: int) -> UtteranceEndEvent:
    return UtteranceEndEvent(0, 5, 5, False, frames)


async def _events(items: list[SessionEvent | float | Exception]) -> AsyncIterator[SessionEvent]:
    for item in items:
        if isinstance(item, float):
            await asyncio.sleep(item)
        elif isinstance(item, Exception):
            raise item
        else:
            yield item


def _shape(batches: list[Batch]) -> list[object]:
    return [[f.sequence for f in b] if isinstance(b, list) else "end" for b in batches]


async def _collect(batcher: FrameBatcher) -> list[Batch]:
    return [b async for b in batcher.batches()]


async def test_frames_ready_together_go_in_batches_and_an_end_flushes_them_in_order() -> None:
    items: list[SessionEvent | float | Exception] = [_frame(i) for i in range(7)]
    items.append(_end(7))
    batcher = FrameBatcher(_events(items), max_frames=5, lead_s=0.1, frame_s=0.02)
    assert _shape(await _collect(batcher)) == [[0, 1, 2, 3, 4], [5, 6], "end"]


async def test_frames_are_held_while_the_client_has_more_than_its_lead() -> None:
    """After a first run the client holds 200 ms; frames arriving one by one 20 ms apart
    wait until its lead (100 ms) would shrink, then go together."""
    items: list[SessionEvent | float | Exception] = [_frame(i) for i in range(10)]
    for i in range(10, 20):
        items += [0.02, _frame(i)]
    batcher = FrameBatcher(_events(items), max_frames=10, lead_s=0.1, frame_s=0.02)
    shape = _shape(await _collect(batcher))
    assert shape[0] == list(range(10))
    later = [b for b in shape[1:] if isinstance(b, list)]
    assert sum(len(b) for b in later) == 10
    assert max(len(b) for b in later) > 1  # held and batched, not one message per frame


async def test_lead_zero_holds_nothing() -> None:
    items: list[SessionEvent | float | Exception] = [_frame(0), 0.01, _frame(1), 0.01, _frame(2)]
    batcher = FrameBatcher(_events(items), max_frames=5, lead_s=0.0, frame_s=0.02)
    assert _shape(await _collect(batcher)) == [[0], [1], [2]]


async def test_a_session_error_comes_after_the_frames_before_it() -> None:
    items: list[SessionEvent | float | Exception] = [_frame(0), _frame(1), ValueError("bad")]
    batcher = FrameBatcher(_events(items), max_frames=5, lead_s=0.1, frame_s=0.02)
    seen: list[Batch] = []
    with pytest.raises(ValueError, match="bad"):
        async for batch in batcher.batches():
            seen.append(batch)
    assert _shape(seen) == [[0, 1]]


def test_the_session_runs_ahead_by_the_batch_less_one_frame() -> None:
    assert session_lead_ms(200, 5, 20) == 280
    assert session_lead_ms(0, 5, 20) == 0
    assert session_lead_ms(100, 1, 20) == 100
