"""One synthesis session: utterances, clause jobs, frame pacing and PAUSE / RESUME / STOP.

Text is cut into clauses as it arrives; each clause is one job on the shared EDF scheduler,
up to ``max_jobs_in_flight`` jobs in flight per session, so the next clause can synthesize
on another inference thread while the current one runs (see :mod:`.clause_jobs`: frames
still leave in text order). The first clause of an utterance is due now; a later clause is
due when the audio before it will have played, the audio of earlier jobs still running
estimated from their text, so under contention other sessions' first clauses go first.
A clause's audio is resampled to the session's rate and cut into exact frames on the
inference thread, then handed to the event loop, where :meth:`events` sends the frames
paced by the monotonic clock at most ``lead_ms`` ahead of real time (:mod:`.playback`).
Utterances and their clauses are kept by :mod:`.utterances`; what a session takes and
gives is in :mod:`.session_messages`.

Each clause gets its own resampler and frame cutter, flushed at the clause's end, so every
frame voices exactly one clause (its last frame is zero-padded: under one frame of silence
at a clause boundary, where the engine puts a pause anyway) and the text positions that a
client uses to resend unspoken text are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol

from duplex.audio.framing import FrameCutter
from duplex.audio.resample import StreamResampler
from duplex.text import Clause, ClauseSegmenter
from duplex.worker.adapters.base import Int16Array, Voice
from duplex.worker.clause_jobs import ClauseJob, InFlight
from duplex.worker.metrics import WorkerPromMetrics
from duplex.worker.playback import PlaybackClock
from duplex.worker.scheduler import SynthesisJob
from duplex.worker.session_messages import (
    FrameEvent,
    SessionEvent,
    SessionSettings,
    SessionState,
    SynthesisFailed,
    UtteranceEndEvent,
)
from duplex.worker.utterances import Utterance, Utterances

_LOG = logging.getLogger(__name__)

MAX_BUFFERED_S = 10.0
"""No further clause is synthesized while this much audio waits unsent (paused sessions)."""


class Scheduler(Protocol):
    """What a session needs of :class:`~duplex.worker.scheduler.SynthesisScheduler`."""

    def submit(self, job: SynthesisJob) -> object: ...

    def cancel_session(self, session_id: str) -> int: ...

    def idle_threads(self) -> int: ...


@dataclass(frozen=True)
class _Frame:
    pcm: bytes
    utterance: Utterance
    clause: Clause
    clause_end: bool


@dataclass(frozen=True)
class _End:
    utterance: Utterance
    stopped: bool


_Job = ClauseJob[Utterance]


class Session:
    """The state of one Synthesize stream; every method runs on the event loop."""

    def __init__(
        self,
        session_id: str,
        voice: Voice,
        scheduler: Scheduler,
        settings: SessionSettings,
        *,
        metrics: WorkerPromMetrics | None = None,
    ) -> None:
        self.session_id = session_id
        self.settings = settings
        self._voice = voice
        self._scheduler = scheduler
        self._loop = asyncio.get_running_loop()
        self._frame_s = settings.frame_ms / 1000
        self._clock = PlaybackClock(
            self._frame_s, settings.lead_ms / 1000, group=settings.release_frames
        )
        self._utts = Utterances(
            settings.max_text_chars,
            lambda: ClauseSegmenter(
                settings.min_clause_chars,
                settings.max_clause_chars,
                settings.first_clause_max_chars or None,
            ),
        )
        self._jobs: InFlight[Utterance] = InFlight()  # text order
        self._generation = 0
        self._outbox: deque[_Frame | _End] = deque()
        self._queued_frames = 0
        self._sequence = 0
        self._input_done = False
        self._draining = False
        self._closed = False
        self._error: BaseException | None = None
        self._wake = asyncio.Event()
        self._metrics = metrics

    # -- input ------------------------------------------------------------------

    def push_text(self, text: str, is_final: bool) -> None:
        """Add text to the current utterance (a new one if none is open)."""
        if self._closed or self._input_done:
            raise RuntimeError("session no longer takes text")
        self._utts.push(text, is_final)
        self._pump()

    def end_input(self) -> None:
        """The client closed its side: the open utterance is final, the stream ends after it."""
        if self._utts.current is not None and not self._closed:
            self.push_text("", is_final=True)
        self._input_done = True
        self._wake.set()

    # -- control ----------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        if self._clock.paused:
            return SessionState.PAUSED
        if self._utts.open or self._outbox:
            return SessionState.SPEAKING
        return SessionState.IDLE

    def pause(self) -> SessionState:
        """Stop sending (within one frame); synthesis may go on."""
        if self._clock.pause(time.monotonic()):
            self._wake.set()
        return self.state

    def resume(self) -> SessionState:
        """Continue sending exactly where PAUSE stopped."""
        if self._clock.resume(time.monotonic()):
            self._wake.set()
        return self.state

    def stop(self) -> SessionState:
        """End every open utterance now (UtteranceEnd stopped) and drop queued text and audio."""
        self._cancel_synthesis()
        self._outbox.clear()
        self._queued_frames = 0
        self._outbox.extend(_End(u, stopped=True) for u in self._utts.open)
        self._utts.stop_text()
        self._clock.reset()  # the client drops what it had buffered
        self._wake.set()
        return SessionState.IDLE

    def drain(self) -> None:
        """The worker is draining: end the stream once nothing is left to say."""
        self._draining = True
        self._wake.set()

    def close(self) -> None:
        """Cancel everything (stream over, client gone); idempotent."""
        if not self._closed:
            self._closed = True
            self._cancel_synthesis()
            self._outbox.clear()
            self._queued_frames = 0
            self._wake.set()

    def fail(self, error: BaseException) -> None:
        """End the stream with `error` (raised by :meth:`events`), e.g. invalid input."""
        if self._error is None:
            self._error = error
            self._cancel_synthesis()
            self._wake.set()

    @property
    def finished_by_drain(self) -> bool:
        """Whether :meth:`events` ended because the worker drains (not the client)."""
        return self._draining and not self._input_done and not self._closed

    # -- output -----------------------------------------------------------------

    @property
    def underruns(self) -> int:
        """Gaps in audio the client was waiting for (counted once per gap)."""
        return self._clock.underruns

    async def events(self) -> AsyncGenerator[SessionEvent, None]:
        """Frames and utterance ends, paced; ends when input is done and all is said."""
        async for item in self.batches(1):
            if isinstance(item, list):
                for frame in item:
                    yield frame
            else:
                yield item

    async def batches(
        self, max_frames: int
    ) -> AsyncGenerator[list[FrameEvent] | UtteranceEndEvent, None]:
        """What `events` gives, with the frames due at the same moment (up to ``max_frames``,
        a group the playback clock releases at once) in one list: one generator step per
        group instead of per frame."""
        while True:
            self._wake.clear()
            if self._error is not None:
                raise self._error
            if self._closed:
                return
            now = time.monotonic()
            head = self._outbox[0] if self._outbox and not self._clock.paused else None
            if head is None:
                ended = not self._outbox and not self._utts.open
                if ended and (self._input_done or self._draining):
                    return
                await self._sleep(self._check_underrun(now))
                continue
            if isinstance(head, _End):
                self._outbox.popleft()
                yield self._end_event(head)
                continue
            wait = self._clock.wait_before_next(now)
            if wait > 0:
                await self._sleep(wait)
                continue
            outbox = self._outbox
            outbox.popleft()
            batch = [self._frame_event(head)]
            # The rest of the group (due by the same clock reading) joins this step.
            while len(batch) < max_frames and outbox:
                head = outbox[0]
                if not isinstance(head, _Frame) or self._clock.wait_before_next(now) > 0:
                    break
                outbox.popleft()
                batch.append(self._frame_event(head))
            self._queued_frames -= len(batch)
            yield batch
            if self._utts.work and len(self._jobs) < self.settings.max_jobs_in_flight:
                self._pump()

    def _check_underrun(self, now: float) -> float | None:
        counted = self._clock.underruns
        delay = self._clock.check_underrun(now, self._owed())
        if self._metrics is not None and self._clock.underruns > counted:
            self._metrics.underrun()
        return delay

    def _frame_event(self, frame: _Frame) -> FrameEvent:
        utt = frame.utterance
        if utt.frames_sent == 0 and self._metrics is not None:
            self._metrics.first_frame(time.monotonic() - utt.started_at)
        event = FrameEvent(
            pcm=frame.pcm,
            sample_rate=self.settings.sample_rate,
            sequence=self._sequence,
            utterance=utt.index,
            text_start=frame.clause.start,
            text_end=frame.clause.end,
            clause_end=frame.clause_end,
        )
        self._sequence += 1
        self._clock.sent()
        utt.frames_sent += 1
        if frame.clause_end:
            utt.voiced = frame.clause.end
        return event

    def _end_event(self, end: _End) -> UtteranceEndEvent:
        utt = end.utterance
        self._utts.ended(utt)
        return UtteranceEndEvent(
            utterance=utt.index,
            text_length=utt.text_length,
            voiced_length=utt.voiced if end.stopped else utt.text_length,
            stopped=end.stopped,
            frames=utt.frames_sent,
        )

    def _owed(self) -> bool:
        """Whether the client waits for more audio of an utterance it has begun to hear."""
        open_ = self._utts.open
        playing = bool(open_) and open_[0].frames_sent > 0
        return playing and (bool(self._jobs) or bool(self._utts.work))

    async def _sleep(self, delay: float | None) -> None:
        """Until something changes, or `delay` seconds (a timer, cheaper than wait_for)."""
        if delay is None:
            await self._wake.wait()
            return
        timer = self._loop.call_later(delay, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    # -- synthesis ----------------------------------------------------------------

    def _pump(self) -> None:
        """Submit clauses while jobs may be added; pass end markers on in text order."""
        work = self._utts.work
        while len(self._jobs) < self.settings.max_jobs_in_flight and work and not self._closed:
            if self._queued_frames * self._frame_s >= MAX_BUFFERED_S:
                return  # resumed from the sender once the backlog shrinks
            if self._jobs and self._scheduler.idle_threads() == 0:
                # Look-ahead only on a thread nobody else is waiting for; retried when a
                # job of this session is done.
                return
            utt, clause = work.popleft()
            if clause is None:
                if self._jobs:
                    # The end goes out after the utterance's last frame: once its jobs are
                    # done, so no look-ahead crosses into the next utterance.
                    work.appendleft((utt, clause))
                    return
                self._outbox.append(_End(utt, stopped=False))
                self._wake.set()
                continue
            deadline = self._deadline(utt)
            utt.submitted += 1
            job = _Job(
                generation=self._generation,
                utterance=utt,
                clause=clause,
                resampler=StreamResampler(self._voice.sample_rate, self.settings.sample_rate),
                cutter=FrameCutter(self.settings.sample_rate, self.settings.frame_ms),
            )
            self._jobs.append(job)
            self._scheduler.submit(
                SynthesisJob(
                    session_id=self.session_id,
                    voice=self._voice,
                    text=clause.text,
                    deadline=deadline,
                    on_audio=functools.partial(self._on_audio, job),
                    on_done=functools.partial(self._on_done, job),
                )
            )

    def _deadline(self, utt: Utterance) -> float:
        """When the clause's first audio is needed (EDF): now for an utterance's first."""
        now = time.monotonic()
        if utt.submitted == 0 and not self._jobs:
            return now
        # A look-ahead job waits for the audio of the jobs still running before it.
        playout_end = self._clock.playout_end(now, self._queued_frames)
        return max(now, playout_end + self._jobs.unreleased_s(self._frame_s))

    def _cancel_synthesis(self) -> None:
        self._generation += 1
        self._jobs.clear()
        self._utts.work.clear()
        self._scheduler.cancel_session(self.session_id)

    def _from_thread(self, callback: Callable[..., None], *args: object) -> None:
        # A closed loop means the session is long gone.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _on_audio(self, job: _Job, chunk: Int16Array) -> None:
        # Inference thread.
        frames = job.cut(chunk)
        if frames:
            self._from_thread(self._arrived, job, frames, False)

    def _on_done(self, job: _Job, error: BaseException | None) -> None:
        # Inference thread (or the cancelling one).
        if error is not None:
            self._from_thread(self._job_failed, job, error)
        else:
            self._from_thread(self._arrived, job, job.finish(), True)

    def _arrived(self, job: _Job, frames: list[bytes], done: bool) -> None:
        if job.generation != self._generation:
            return
        job.frames.extend(frames)
        job.done = done
        for released, pcm, clause_end in self._jobs.release():
            self._outbox.append(_Frame(pcm, released.utterance, released.clause, clause_end))
            self._queued_frames += 1
        self._wake.set()
        if done:
            self._pump()

    def _job_failed(self, job: _Job, error: BaseException) -> None:
        if job.generation != self._generation:
            return
        # A cancel this session did not ask for (the scheduler closing) ends it too.
        _LOG.error(
            "synthesis failed",
            exc_info=error,
            extra={"session_id": self.session_id, "error": f"{type(error).__name__}: {error}"},
        )
        self.fail(SynthesisFailed(f"synthesis failed: {type(error).__name__}: {error}"))
