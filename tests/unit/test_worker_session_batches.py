"""Session.batches: the frames of a released group in one step, the same events in the same
order as Session.events, and never more than asked for in one list."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
from duplex.worker.adapters.base import Int16Array
from duplex.worker.scheduler import SynthesisJob
from duplex.worker.session import Session
from duplex.worker.session_messages import FrameEvent, SessionSettings, UtteranceEndEvent

RATE = 24000
FRAME_SAMPLES = RATE // 50


class _Scheduler:
    """Runs each job at once on the calling thread: a clause of ``frames`` x 20 ms audio."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def submit(self, job: SynthesisJob) -> object:
        job.on_audio(np.full(self.frames * FRAME_SAMPLES, 1000, dtype=np.int16))
        job.on_done(None)
        return object()

    def cancel_session(self, session_id: str) -> int:
        del session_id
        return 0

    def idle_threads(self) -> int:
        return 1


class _Voice:
    model_id = "fixed"
    sample_rate = RATE

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        raise AssertionError("the scheduler above does not synthesize")

    def close(self) -> None:
        pass


def _session(settings: SessionSettings, frames: int) -> Session:
    session = Session("s", _Voice(), _Scheduler(frames), settings)
    session.push_text("One short clause here.", is_final=True)
    session.end_input()
    return session


async def test_frames_due_together_come_as_one_list_of_at_most_max_frames() -> None:
    session = _session(SessionSettings(RATE, lead_ms=0), frames=12)
    items = []
    async with asyncio.timeout(5.0):
        async for item in session.batches(5):
            items.append(item)
    lists = [i for i in items if isinstance(i, list)]
    assert [len(b) for b in lists] == [5, 5, 2]
    assert [f.sequence for b in lists for f in b] == list(range(12))
    assert isinstance(items[-1], UtteranceEndEvent) and items[-1].frames == 12


async def test_events_gives_the_same_frames_one_at_a_time() -> None:
    session = _session(SessionSettings(RATE, lead_ms=0), frames=12)
    async with asyncio.timeout(5.0):
        events = [e async for e in session.events()]
    frames = [e for e in events if isinstance(e, FrameEvent)]
    assert [f.sequence for f in frames] == list(range(12))
    assert isinstance(events[-1], UtteranceEndEvent)


async def test_a_paced_session_releases_its_groups_whole_and_keeps_real_time() -> None:
    # Lead 100 ms, groups of 3: the first group at once, then one group per 60 ms.
    settings = SessionSettings(RATE, lead_ms=100, release_frames=3)
    session = _session(settings, frames=15)
    sizes: list[int] = []
    start = time.monotonic()
    async with asyncio.timeout(5.0):
        async for item in session.batches(3):
            if isinstance(item, list):
                sizes.append(len(item))
    elapsed = time.monotonic() - start
    assert sum(sizes) == 15 and max(sizes) <= 3
    assert sizes.count(3) >= 4  # groups leave whole, not frame by frame
    print(f"15 frames (300 ms) at lead 100 ms in {elapsed * 1000:.0f} ms, groups {sizes}")
