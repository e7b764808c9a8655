"""Per-session utterances, frame tagging, pacing, PAUSE / RESUME / STOP and under-runs."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import numpy as np
import pytest
from duplex.worker.adapters.base import Int16Array
from duplex.worker.adapters.tone import ToneVoice
from duplex.worker.clause_jobs import SECONDS_PER_CHAR
from duplex.worker.scheduler import JobCancelled, SynthesisJob, SynthesisScheduler
from duplex.worker.session import Session
from duplex.worker.session_messages import (
    FrameEvent,
    InvalidText,
    SessionEvent,
    SessionSettings,
    SessionState,
    UtteranceEndEvent,
)

TEXT = "Hello there, my good friend. The meeting starts at nine. Please be on time."
LOOK_AHEAD = SessionSettings(24000, lead_ms=0, max_jobs_in_flight=2)  # two clauses at once


class ManualScheduler:
    """Records jobs; the test decides when each one produces audio and finishes."""

    def __init__(self) -> None:
        self.jobs: list[SynthesisJob] = []
        self.submitted_at: list[float] = []
        self.cancelled: list[str] = []

    def submit(self, job: SynthesisJob) -> object:
        self.jobs.append(job)
        self.submitted_at.append(time.monotonic())
        return object()

    def cancel_session(self, session_id: str) -> int:
        self.cancelled.append(session_id)
        pending = [j for j in self.jobs if j.session_id == session_id]
        for job in pending:
            job.on_done(JobCancelled("cancelled"))
        self.jobs = [j for j in self.jobs if j.session_id != session_id]
        return len(pending)

    def idle_threads(self) -> int:
        return 1  # as if a thread were always free: look-ahead is never held back

    def finish(self, samples: int, sample_rate: int = 24000) -> SynthesisJob:
        """Give the oldest job `samples` of audio and complete it."""
        job = self.jobs.pop(0)
        job.on_audio(np.full(samples, 1000, dtype=np.int16))
        job.on_done(None)
        del sample_rate
        return job


class FixedVoice:
    """A voice the ManualScheduler never calls; only its rate matters."""

    model_id = "fixed"
    sample_rate = 24000

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        raise AssertionError("ManualScheduler does not synthesize")

    def close(self) -> None:
        pass


class SlowVoice:
    """Tone audio in two chunks with a pause before each; records when each text starts."""

    model_id = "slow"
    sample_rate = 24000

    def __init__(self, chunk_delay_s: float) -> None:
        self.delay = chunk_delay_s
        self.lock = threading.Lock()
        self.started: list[tuple[str, float]] = []
        self.finished: list[tuple[str, float]] = []

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        with self.lock:
            self.started.append((text, time.monotonic()))
        half = len(text) * 720  # 30 ms of audio per character in each chunk
        for _ in range(2):
            time.sleep(self.delay)
            yield np.full(half, 1000, dtype=np.int16)
        with self.lock:
            self.finished.append((text, time.monotonic()))

    def close(self) -> None:
        pass


@pytest.fixture
def scheduler() -> Iterator[SynthesisScheduler]:
    sched = SynthesisScheduler(2)
    sched.start()
    yield sched
    sched.close()


def _tone() -> ToneVoice:
    return ToneVoice("tone-fast", 24000, 0.0)


def _wait_until(condition: Callable[[], bool], limit_s: float = 5.0) -> bool:
    """Poll `condition` (off the event loop) until true or `limit_s` passed."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


async def _collect(session: Session, limit_s: float = 10.0) -> list[SessionEvent]:
    async with asyncio.timeout(limit_s):
        return [event async for event in session.events()]


async def _next(events: AsyncIterator[SessionEvent], limit_s: float = 5.0) -> SessionEvent:
    async with asyncio.timeout(limit_s):
        return await anext(events)


async def test_frames_are_exact_contiguous_and_tagged_with_their_clause(
    scheduler: SynthesisScheduler,
) -> None:
    """48 kHz frames of 1920 bytes, sequence from 0, text offsets clause by clause."""
    session = Session("s", _tone(), scheduler, SessionSettings(48000, lead_ms=0))
    session.push_text(TEXT, is_final=True)
    session.end_input()
    events = await _collect(session)
    frames = [e for e in events if isinstance(e, FrameEvent)]
    assert isinstance(events[-1], UtteranceEndEvent)
    assert all(len(f.pcm) == 1920 and f.sample_rate == 48000 for f in frames)
    assert [f.sequence for f in frames] == list(range(len(frames)))
    ends = [f for f in frames if f.clause_end]
    assert [f.text_end for f in ends][-1] == len(TEXT)
    assert len(ends) >= 3  # one per clause
    # Clauses follow each other without a hole, and a clause's frames share its offsets.
    starts = [frames[0].text_start] + [f.text_end for f in ends[:-1]]
    assert starts[0] == 0
    assert [f.text_start for f in ends] == starts
    end = events[-1]
    assert end == UtteranceEndEvent(0, len(TEXT), len(TEXT), False, len(frames))


async def test_requested_rate_sets_the_frame_size(scheduler: SynthesisScheduler) -> None:
    """At 16 kHz a 20 ms frame is 640 bytes."""
    session = Session("s", _tone(), scheduler, SessionSettings(16000, lead_ms=0))
    session.push_text("Short one.", is_final=True)
    session.end_input()
    frames = [e for e in await _collect(session) if isinstance(e, FrameEvent)]
    assert frames and all(len(f.pcm) == 640 for f in frames)
    # tone-fast makes 60 ms per character: 10 characters are 600 ms, 30 frames.
    assert len(frames) == 30


async def test_an_empty_chunk_that_is_not_final_is_refused(scheduler: SynthesisScheduler) -> None:
    """Empty text is invalid unless it is the final chunk that closes an utterance."""
    session = Session("s", _tone(), scheduler, SessionSettings(48000))
    with pytest.raises(InvalidText, match="empty text chunk"):
        session.push_text("", is_final=False)
    with pytest.raises(InvalidText, match="empty utterance"):
        session.push_text("", is_final=True)
    session.close()


async def test_an_empty_final_chunk_ends_the_open_utterance(
    scheduler: SynthesisScheduler,
) -> None:
    """Text without is_final, then an empty final chunk: one utterance, fully voiced."""
    session = Session("s", _tone(), scheduler, SessionSettings(48000, lead_ms=0))
    session.push_text("Hi there", is_final=False)
    session.push_text("", is_final=True)
    session.end_input()
    events = await _collect(session)
    assert events[-1] == UtteranceEndEvent(0, 8, 8, False, len(events) - 1)


async def test_text_over_the_limit_is_refused(scheduler: SynthesisScheduler) -> None:
    """The per-utterance limit counts every chunk of the utterance."""
    session = Session("s", _tone(), scheduler, SessionSettings(48000, max_text_chars=10))
    session.push_text("12345", is_final=False)
    with pytest.raises(InvalidText, match="limit of 10"):
        session.push_text("678901", is_final=False)
    session.close()


async def test_later_text_after_a_final_chunk_starts_the_next_utterance(
    scheduler: SynthesisScheduler,
) -> None:
    """Two utterances in one session: indexes 0 and 1, sequence continues across them."""
    session = Session("s", _tone(), scheduler, SessionSettings(24000, lead_ms=0))
    session.push_text("First one.", is_final=True)
    session.push_text("Second one.", is_final=True)
    session.end_input()
    events = await _collect(session)
    ends = [e for e in events if isinstance(e, UtteranceEndEvent)]
    frames = [e for e in events if isinstance(e, FrameEvent)]
    assert [e.utterance for e in ends] == [0, 1]
    assert [f.sequence for f in frames] == list(range(len(frames)))
    assert {f.utterance for f in frames} == {0, 1}


async def test_frames_are_paced_at_most_the_lead_ahead_of_real_time(
    scheduler: SynthesisScheduler,
) -> None:
    """With a 100 ms lead, 1.2 s of audio takes at least about 1.1 s to send."""
    session = Session("s", _tone(), scheduler, SessionSettings(48000, lead_ms=100))
    session.push_text("Twenty chars here ok", is_final=True)  # 20 chars: 1.2 s of tone
    session.end_input()
    started = time.monotonic()
    arrivals: list[tuple[float, int]] = []
    async for event in session.events():
        if isinstance(event, FrameEvent):
            arrivals.append((time.monotonic() - started, event.sequence))
    assert len(arrivals) == 60
    for at, seq in arrivals:
        # Never more than the lead ahead (the first frame defines the clock's origin).
        assert seq * 0.020 - at <= 0.100 + 0.020 + 0.005
    assert arrivals[-1][0] >= 59 * 0.020 - 0.100 - 0.010


async def test_release_frames_sends_frames_in_groups_within_the_lead(
    scheduler: SynthesisScheduler,
) -> None:
    """Groups of 5 at a 180 ms lead: frames come in bursts (one wake per group), never more
    than the lead ahead, and the whole utterance still takes about real time."""
    settings = SessionSettings(48000, lead_ms=180, release_frames=5)
    session = Session("s", _tone(), scheduler, settings)
    session.push_text("Twenty chars here ok", is_final=True)  # 1.2 s of tone
    session.end_input()
    started = time.monotonic()
    arrivals: list[tuple[float, int]] = []
    async for event in session.events():
        if isinstance(event, FrameEvent):
            arrivals.append((time.monotonic() - started, event.sequence))
    assert len(arrivals) == 60
    for at, seq in arrivals:
        assert seq * 0.020 - at <= 0.180 + 0.020 + 0.005
    # After the first lead's worth, frames leave 5 at a time: a wait before every fifth
    # frame, not before each one (50 frames: about 10 waits rather than 50).
    later = [at for at, seq in arrivals if seq >= 10]
    waits = sum(1 for a, b in itertools.pairwise(later) if b - a > 0.005)
    assert waits <= 50 // 5 + 2
    assert arrivals[-1][0] >= 59 * 0.020 - 0.180 - 0.010


def test_release_frames_must_be_positive() -> None:
    with pytest.raises(ValueError, match="release_frames"):
        SessionSettings(48000, release_frames=0)


async def test_pause_stops_frames_and_resume_continues_the_sequence(
    scheduler: SynthesisScheduler,
) -> None:
    """No frame leaves while paused; after RESUME the next frame has the next number."""
    session = Session("s", _tone(), scheduler, SessionSettings(48000, lead_ms=40))
    session.push_text("A fairly long sentence for pausing.", is_final=True)
    events = session.events()
    first = await _next(events)
    assert isinstance(first, FrameEvent)
    assert session.pause() is SessionState.PAUSED
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.3)
    assert not pending.done()
    assert session.resume() is SessionState.SPEAKING
    resumed = await asyncio.wait_for(pending, 5)
    assert isinstance(resumed, FrameEvent)
    assert resumed.sequence == first.sequence + 1
    session.close()
    await events.aclose()


async def test_stop_ends_the_utterance_and_reports_what_was_voiced() -> None:
    """STOP: UtteranceEnd(stopped) with voiced_length = end of the last fully sent clause."""
    sched = ManualScheduler()
    session = Session("s", FixedVoice(), sched, SessionSettings(24000, lead_ms=0))
    session.push_text("First clause here, second clause there. Third one.", is_final=True)
    events = session.events()
    sched.finish(2400)  # 100 ms: 5 frames of clause 1
    got = [await _next(events) for _ in range(5)]
    assert all(isinstance(e, FrameEvent) for e in got)
    assert isinstance(got[-1], FrameEvent) and got[-1].clause_end
    first_end = got[-1].text_end
    assert session.stop() is SessionState.IDLE
    assert sched.cancelled == ["s"]
    end = await _next(events)
    assert end == UtteranceEndEvent(0, 50, first_end, True, 5)
    # Later text is a new utterance.
    session.push_text("Again.", is_final=True)
    sched.finish(480)
    frame = await _next(events)
    assert isinstance(frame, FrameEvent) and frame.utterance == 1 and frame.sequence == 5
    session.close()
    await events.aclose()


async def test_a_new_utterances_first_clause_is_due_now_and_later_ones_at_playout() -> None:
    """EDF deadlines (one job in flight): now for the first clause, playback end for the next."""
    sched = ManualScheduler()
    session = Session("s", FixedVoice(), sched, SessionSettings(24000, lead_ms=0))
    before = time.monotonic()
    session.push_text("First clause here, second clause there.", is_final=True)
    assert len(sched.jobs) == 1  # one job in flight per session
    assert before <= sched.jobs[0].deadline <= time.monotonic()
    sched.finish(24000)  # one second of audio, not yet sent
    await asyncio.sleep(0)  # the loop runs the delivery callbacks
    assert len(sched.jobs) == 1
    second = sched.jobs[0]
    assert second.deadline - sched.submitted_at[-1] == pytest.approx(1.0, abs=0.05)
    session.close()


async def test_a_gap_after_playback_started_counts_one_underrun() -> None:
    """The sender runs dry while a clause is still being synthesized: one under-run."""
    sched = ManualScheduler()
    session = Session("s", FixedVoice(), sched, SessionSettings(24000, lead_ms=20))
    session.push_text("First clause here, second clause there.", is_final=True)
    events = session.events()
    sched.finish(1200)  # 50 ms: 3 frames (the last one padded)
    for _ in range(3):
        await _next(events)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.25)  # well past the 60 ms of audio sent
    assert session.underruns == 1
    sched.finish(480)
    assert isinstance(await asyncio.wait_for(pending, 5), FrameEvent)
    assert session.underruns == 1
    session.close()
    await events.aclose()


async def test_no_underrun_is_counted_while_paused_or_waiting_for_text() -> None:
    """A client that pauses, or has not sent the rest of its text, causes no under-run."""
    sched = ManualScheduler()
    session = Session("s", FixedVoice(), sched, SessionSettings(24000, lead_ms=0))
    session.push_text("First clause here, and", is_final=False)
    events = session.events()
    sched.finish(480)
    await _next(events)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.15)  # nothing owed: the segmenter waits for the client's text
    assert session.underruns == 0
    session.push_text(" then more.", is_final=True)
    assert len(sched.jobs) == 1  # owed now, but the client paused
    session.pause()
    await asyncio.sleep(0.15)
    assert session.underruns == 0
    session.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)


async def test_stop_in_one_session_leaves_another_untouched(
    scheduler: SynthesisScheduler,
) -> None:
    """Two sessions on one scheduler and voice: STOP ends one, the other says everything."""
    voice = _tone()
    a = Session("a", voice, scheduler, SessionSettings(24000, lead_ms=20))
    b = Session("b", voice, scheduler, SessionSettings(24000, lead_ms=20))
    a.push_text("Session a speaks a long line.", is_final=True)
    b.push_text("Session b speaks too.", is_final=True)
    b.end_input()
    events_a = a.events()
    assert isinstance(await _next(events_a), FrameEvent)
    a.stop()
    stopped = await _next(events_a)
    assert isinstance(stopped, UtteranceEndEvent) and stopped.stopped
    events_b = await _collect(b)
    end_b = events_b[-1]
    assert isinstance(end_b, UtteranceEndEvent)
    assert not end_b.stopped and end_b.voiced_length == len("Session b speaks too.")
    assert end_b.frames == len("Session b speaks too.") * 3  # 60 ms per char, 20 ms frames
    a.close()
    await events_a.aclose()


async def test_close_cancels_the_sessions_jobs_and_ends_events() -> None:
    """close() cancels scheduler jobs and the event stream ends."""
    sched = ManualScheduler()
    session = Session("s", FixedVoice(), sched, SessionSettings(24000))
    session.push_text("Something to say.", is_final=True)
    session.close()
    assert sched.cancelled == ["s"]
    assert await _collect(session) == []


async def test_draining_ends_an_idle_session() -> None:
    """A session with nothing left to say ends its stream when the worker drains."""
    sched = ManualScheduler()
    session = Session("s", FixedVoice(), sched, SessionSettings(24000))
    session.drain()
    assert await _collect(session) == []
    assert session.finished_by_drain


async def test_a_synthesis_error_ends_the_stream_with_it() -> None:
    """An engine failure reaches the reader of events()."""
    sched = ManualScheduler()
    session = Session("s", FixedVoice(), sched, SessionSettings(24000))
    session.push_text("Boom.", is_final=True)
    sched.jobs.pop(0).on_done(RuntimeError("engine exploded"))
    with pytest.raises(RuntimeError, match="engine exploded"):
        await _collect(session)


async def test_a_sessions_next_clause_starts_before_the_first_one_finishes(
    scheduler: SynthesisScheduler,
) -> None:
    """Two threads, a slow voice: the second clause runs while the first is still running."""
    voice = SlowVoice(0.15)
    session = Session("s", voice, scheduler, LOOK_AHEAD)
    session.push_text("First clause here, second clause there.", is_final=True)
    session.end_input()
    await _collect(session)
    assert len(voice.started) == 2
    (_, first_finished), (second, second_started) = voice.finished[0], voice.started[1]
    assert second.startswith("second")
    assert second_started < first_finished


async def test_overlapping_clauses_still_leave_in_text_order_with_contiguous_sequences(
    scheduler: SynthesisScheduler,
) -> None:
    """Frames of concurrently synthesized clauses come out clause by clause, numbered 0..n-1."""
    voice = SlowVoice(0.05)
    session = Session("s", voice, scheduler, LOOK_AHEAD)
    session.push_text(TEXT, is_final=True)
    session.end_input()
    events = await _collect(session)
    frames = [e for e in events if isinstance(e, FrameEvent)]
    assert [f.sequence for f in frames] == list(range(len(frames)))
    starts = [f.text_start for f in frames]
    assert starts == sorted(starts) and starts[0] == 0
    ends = [f for f in frames if f.clause_end]
    assert len(ends) >= 3 and ends[-1].text_end == len(TEXT)
    # Each clause's frames are contiguous, end with its clause_end frame, and the clauses
    # follow each other without a hole; 60 ms of audio per character, 20 ms frames.
    assert [f.text_start for f in ends] == [0] + [f.text_end for f in ends[:-1]]
    for end in ends:
        mine = [f for f in frames if f.text_start == end.text_start]
        assert mine[-1] is end and not any(f.clause_end for f in mine[:-1])
        assert len(mine) == len(TEXT[end.text_start : end.text_end]) * 3
    assert events[-1] == UtteranceEndEvent(0, len(TEXT), len(TEXT), False, len(frames))


async def test_stop_with_two_jobs_in_flight_ends_cleanly(scheduler: SynthesisScheduler) -> None:
    """STOP while two clauses synthesize: UtteranceEnd(stopped), no stale frame, jobs gone."""
    voice = SlowVoice(0.2)
    session = Session("s", voice, scheduler, LOOK_AHEAD)
    session.push_text(TEXT, is_final=True)
    events = session.events()
    first = await _next(events)
    assert isinstance(first, FrameEvent)
    assert scheduler.stats().running == 2  # both clauses on the two threads
    session.stop()
    end = await _next(events)
    assert isinstance(end, UtteranceEndEvent) and end.stopped and end.voiced_length == 0
    assert await asyncio.to_thread(_wait_until, lambda: scheduler.queue_depth() == 0)
    await asyncio.sleep(0.05)  # callbacks of the cancelled jobs reach the loop
    session.push_text("Again.", is_final=True)
    session.end_input()
    rest = [event async for event in events]
    frames = [e for e in rest if isinstance(e, FrameEvent)]
    assert frames and {f.utterance for f in frames} == {1}
    assert [f.sequence for f in frames] == list(range(1, 1 + len(frames)))
    assert rest[-1] == UtteranceEndEvent(1, 6, 6, False, len(frames))


async def test_a_look_ahead_job_is_due_when_the_audio_before_it_will_have_played() -> None:
    """The second clause's deadline counts the first clause's estimated audio."""
    sched = ManualScheduler()
    session = Session("s", FixedVoice(), sched, LOOK_AHEAD)
    before = time.monotonic()
    session.push_text("First clause here, second clause there.", is_final=True)
    assert len(sched.jobs) == 2
    first, second = sched.jobs
    assert before <= first.deadline <= time.monotonic()
    estimate = SECONDS_PER_CHAR * len(first.text)
    assert second.deadline - sched.submitted_at[1] == pytest.approx(estimate, abs=0.05)
    session.close()


async def test_edf_runs_another_sessions_first_clause_before_a_look_ahead_job() -> None:
    """One thread: a newcomer's first clause is due before a busy session's look-ahead job."""
    sched = SynthesisScheduler(1)
    sched.start()
    try:
        voice = SlowVoice(0.1)
        busy = Session("busy", voice, sched, LOOK_AHEAD)
        busy.push_text("Busy first clause, busy second clause.", is_final=True)
        # The busy session's first clause holds the only thread.
        assert await asyncio.to_thread(_wait_until, lambda: bool(voice.started))
        newcomer = Session("new", voice, sched, SessionSettings(24000, lead_ms=0))
        newcomer.push_text("Newcomer speaks.", is_final=True)
        newcomer.end_input()
        busy.end_input()
        await asyncio.gather(_collect(busy), _collect(newcomer))
        order = [text.strip() for text, _ in voice.started]
        assert order == ["Busy first clause,", "Newcomer speaks.", "busy second clause."]
    finally:
        sched.close()


async def test_a_look_ahead_job_waits_while_every_thread_is_busy() -> None:
    """With no idle thread, a session keeps one job in flight: look-ahead never queues."""
    sched = ManualScheduler()
    sched.idle_threads = lambda: 0  # type: ignore[method-assign]
    session = Session("s", FixedVoice(), sched, LOOK_AHEAD)
    session.push_text("First clause here, second clause there.", is_final=True)
    assert len(sched.jobs) == 1
    sched.finish(2400)
    for _ in range(3):
        await asyncio.sleep(0)  # the loop runs the delivery callbacks
    assert len(sched.jobs) == 1  # the second clause goes once the first is done
    session.close()
