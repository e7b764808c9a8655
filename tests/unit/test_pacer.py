"""The real-time pacer: clock-paced sends with a lead, pause, clear, markers, bounds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from duplex.audio.frames import PcmFrame
from duplex.orchestrator.session.pacer import Pacer
from duplex.orchestrator.session.pacer_clock import PacerClock

FRAME = 0.02


def pcm(data: bytes) -> PcmFrame:
    return PcmFrame(data, 48000)


class Recorder:
    """A sink that records each frame with the monotonic time it was sent."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.times: list[float] = []
        self.lateness: list[float] = []

    async def send(self, frame: PcmFrame) -> None:
        self.frames.append(frame.pcm)
        self.times.append(time.monotonic())


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def make_pacer(rec: Recorder, lead_ms: int = 60, max_buffer: int = 500) -> Pacer:
    pacer = Pacer(
        rec.send, lead_ms=lead_ms, max_buffer=max_buffer, observe_lateness=rec.lateness.append
    )
    pacer.start()
    return pacer


async def push_frames(pacer: Pacer, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        await pacer.push(pcm(i.to_bytes(4, "big")))


async def wait_for(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_frames_leave_at_real_time_after_the_lead(rec: Recorder) -> None:
    """A 1 s run takes about 1 s minus the lead: the pacer never sends ahead of schedule."""
    pacer = make_pacer(rec, lead_ms=60)
    await push_frames(pacer, 50)
    await wait_for(lambda: len(rec.frames) == 50)
    await pacer.aclose()
    span = rec.times[-1] - rec.times[0]
    # frame 49 is due at start + 49 * 20 ms - 60 ms = 0.92 s
    assert span >= 0.92 - 0.005
    assert span < 1.5
    assert rec.frames == [i.to_bytes(4, "big") for i in range(50)]


async def test_the_first_lead_worth_goes_at_once_then_one_frame_per_20ms(rec: Recorder) -> None:
    """With a 60 ms lead, frames 0-3 are due at the start; frame 4 not before 20 ms later."""
    pacer = make_pacer(rec, lead_ms=60)
    await push_frames(pacer, 8)
    await wait_for(lambda: len(rec.frames) == 8)
    await pacer.aclose()
    t0 = rec.times[0]
    assert rec.times[3] - t0 < 0.1
    assert rec.times[4] - t0 >= FRAME - 0.002
    assert rec.times[7] - t0 >= 4 * FRAME - 0.002


async def test_pause_stops_sending_at_once_and_resume_continues_in_order(rec: Recorder) -> None:
    """No frame is sent between pause() and resume(); the rest follow, in order."""
    pacer = make_pacer(rec, lead_ms=20)
    await push_frames(pacer, 30)
    await wait_for(lambda: len(rec.frames) >= 5)
    pacer.pause()
    sent_at_pause = len(rec.frames)
    await asyncio.sleep(0.15)
    assert len(rec.frames) == sent_at_pause
    assert pacer.buffered == 30 - sent_at_pause
    pacer.resume()
    await wait_for(lambda: len(rec.frames) == 30)
    await pacer.aclose()
    assert rec.frames == [i.to_bytes(4, "big") for i in range(30)]


async def test_clear_drops_buffered_frames_but_markers_still_run(rec: Recorder) -> None:
    """STOP semantics: buffered audio is gone at once; the AudioEnd marker still fires."""
    pacer = make_pacer(rec, lead_ms=20)
    fired: list[int] = []

    async def marker() -> None:
        fired.append(len(rec.frames))

    await push_frames(pacer, 50)
    pacer.push_marker(marker)
    await wait_for(lambda: len(rec.frames) >= 3)
    dropped = pacer.clear()
    await wait_for(lambda: bool(fired))
    sent = len(rec.frames)
    await asyncio.sleep(0.05)
    await pacer.aclose()
    assert dropped > 0
    assert sent + dropped == 50
    assert len(rec.frames) == sent
    assert fired == [sent]
    assert pacer.buffered == 0


async def test_a_marker_runs_after_every_frame_queued_before_it(rec: Recorder) -> None:
    """Markers keep queue order: AudioEnd follows the utterance's last frame."""
    pacer = make_pacer(rec, lead_ms=60)
    seen: list[int] = []

    async def marker() -> None:
        seen.append(len(rec.frames))

    await push_frames(pacer, 6)
    pacer.push_marker(marker)
    await push_frames(pacer, 4, first=6)
    pacer.push_marker(marker)
    await wait_for(lambda: len(seen) == 2)
    await pacer.aclose()
    assert seen == [6, 10]


async def test_drop_tail_removes_only_unsent_frames_and_keeps_markers(rec: Recorder) -> None:
    """Failover drops the frames of a half-received clause that are still buffered."""
    pacer = make_pacer(rec, lead_ms=0)
    pacer.pause()
    seen: list[int] = []

    async def marker() -> None:
        seen.append(len(rec.frames))

    await push_frames(pacer, 3)
    pacer.push_marker(marker)
    await push_frames(pacer, 2, first=3)
    assert pacer.drop_tail(10) == 5
    assert pacer.buffered == 0
    pacer.resume()
    await wait_for(lambda: bool(seen))
    await pacer.aclose()
    assert rec.frames == []
    assert seen == [0]


async def test_drop_tail_takes_the_newest_frames_first(rec: Recorder) -> None:
    """Only the last `count` frames go; earlier ones are still sent."""
    pacer = make_pacer(rec, lead_ms=200)
    pacer.pause()
    await push_frames(pacer, 5)
    assert pacer.drop_tail(2) == 2
    pacer.resume()
    await wait_for(lambda: len(rec.frames) == 3)
    await asyncio.sleep(0.03)
    await pacer.aclose()
    assert rec.frames == [i.to_bytes(4, "big") for i in range(3)]


async def test_push_waits_while_the_buffer_is_full(rec: Recorder) -> None:
    """The bound holds: the producer is held back instead of the buffer growing."""
    pacer = make_pacer(rec, lead_ms=0, max_buffer=4)
    pacer.pause()
    await push_frames(pacer, 4)
    blocked = asyncio.create_task(pacer.push(pcm(b"late")))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    assert pacer.buffered == 4
    pacer.resume()
    await asyncio.wait_for(blocked, 2.0)
    await wait_for(lambda: len(rec.frames) == 5)
    await pacer.aclose()
    assert rec.frames[-1] == b"late"


async def test_lateness_is_recorded_for_every_frame_and_small_when_idle(rec: Recorder) -> None:
    """One lateness sample per frame; on an idle loop each is far below a frame."""
    pacer = make_pacer(rec, lead_ms=40)
    await push_frames(pacer, 20)
    await wait_for(lambda: len(rec.frames) == 20)
    await pacer.aclose()
    assert len(rec.lateness) == 20
    assert all(x >= 0 for x in rec.lateness)
    assert sorted(rec.lateness)[len(rec.lateness) // 2] < FRAME


async def test_an_underrun_starts_a_new_run_with_a_fresh_lead(rec: Recorder) -> None:
    """After the client ran dry, the next frames refill the lead at once."""
    pacer = make_pacer(rec, lead_ms=60)
    await push_frames(pacer, 2)
    await wait_for(lambda: len(rec.frames) == 2)
    await asyncio.sleep(0.15)  # longer than the lead: an under-run
    await push_frames(pacer, 6, first=2)
    await wait_for(lambda: len(rec.frames) == 8)
    await pacer.aclose()
    t = rec.times
    # frame 2 goes at once; then a new run: frames 3-6 are its first lead's worth.
    assert t[6] - t[2] < 0.1
    assert t[7] - t[3] >= FRAME - 0.002
    # The late frames are the worker's fault, not the pacer's: no lateness charged.
    assert max(rec.lateness) < 0.05


async def test_aclose_cancels_the_task_and_drops_the_buffer(rec: Recorder) -> None:
    """Closing leaves no task behind."""
    pacer = make_pacer(rec, lead_ms=0)
    pacer.pause()
    await push_frames(pacer, 3)
    task = pacer.task
    await pacer.aclose()
    assert task is not None and task.done()
    assert pacer.buffered == 0
    assert rec.frames == []


async def test_a_frame_waiting_for_room_is_dropped_by_clear(rec: Recorder) -> None:
    """clear() also drops the frame a producer was blocked on: nothing stale follows a STOP."""
    pacer = make_pacer(rec, lead_ms=0, max_buffer=2)
    pacer.pause()
    await push_frames(pacer, 2)
    blocked = asyncio.create_task(pacer.push(pcm(b"olds")))
    await asyncio.sleep(0.02)
    assert pacer.clear() == 2
    await asyncio.wait_for(blocked, 2.0)
    pacer.resume()
    await pacer.push(pcm(b"news"))
    await wait_for(lambda: len(rec.frames) == 1)
    await asyncio.sleep(0.03)
    await pacer.aclose()
    assert rec.frames == [b"news"]


async def test_pacers_on_one_shared_clock_each_keep_real_time_and_order() -> None:
    """Twenty sessions on one PacerClock: every one gets its frames in order, at real time."""
    ticker = PacerClock()
    recs = [Recorder() for _ in range(20)]
    pacers = [
        Pacer(r.send, lead_ms=40, observe_lateness=r.lateness.append, ticker=ticker) for r in recs
    ]
    for p in pacers:
        p.start()
    for p in pacers:
        await push_frames(p, 15)
    await wait_for(lambda: all(len(r.frames) == 15 for r in recs))
    for p in pacers:
        await p.aclose()
    await ticker.aclose()
    for r in recs:
        assert r.frames == [i.to_bytes(4, "big") for i in range(15)]
        # frame 14 is due 14 * 20 ms - 40 ms = 240 ms after the first
        assert r.times[-1] - r.times[0] >= 0.24 - 0.005
        assert len(r.lateness) == 15


async def test_a_send_that_waits_holds_back_only_its_own_session(rec: Recorder) -> None:
    """One sink stalls mid-send: the others on the same clock keep their pace; the stalled
    session finishes its send and goes on once the sink is free."""
    ticker = PacerClock()
    gate = asyncio.Event()
    stalled: list[bytes] = []

    async def slow_send(frame: PcmFrame) -> None:
        await gate.wait()
        stalled.append(frame.pcm)

    slow = Pacer(slow_send, lead_ms=0, ticker=ticker)
    fast = Pacer(rec.send, lead_ms=0, ticker=ticker)
    slow.start()
    fast.start()
    await push_frames(slow, 3)
    await push_frames(fast, 5)
    await wait_for(lambda: len(rec.frames) == 5)
    assert stalled == []
    gate.set()
    await wait_for(lambda: len(stalled) == 3)
    for p in (slow, fast):
        await p.aclose()
    await ticker.aclose()
    assert stalled == [i.to_bytes(4, "big") for i in range(3)]


async def test_a_failing_send_ends_the_pacer_task_with_the_error(rec: Recorder) -> None:
    """The session watches the pacer's task: a sink that raises ends it with that error."""

    async def broken(frame: PcmFrame) -> None:
        raise ConnectionError("client gone")

    pacer = Pacer(broken, lead_ms=0, ticker=PacerClock())
    pacer.start()
    await pacer.push(pcm(b"xx"))
    task = pacer.task
    assert task is not None
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(2.0):
            await task
    await pacer.aclose()
