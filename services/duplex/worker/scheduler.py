"""Earliest-deadline-first scheduling of clause synthesis over a few inference threads."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from duplex.worker.adapters.base import Int16Array, Voice, WideVoice
from duplex.worker.clause_jobs import SECONDS_PER_CHAR
from duplex.worker.idle_cores import IdleCores
from duplex.worker.metrics import WorkerPromMetrics

_LOG = logging.getLogger(__name__)

RTF_WEIGHT = 0.2  # share of the newest job in the weighted rtf

DUE_MARGIN_S = 1.0
"""A job may take any idle thread once its deadline is nearer than this margin plus its
own expected synthesis time; one due later ("early": a continuation clause whose audio is
not needed yet) never takes the last idle thread. A running clause cannot be preempted,
so a thread kept free is what lets a new utterance's first clause start at once."""

SYNTH_ESTIMATE_FACTOR = 2.0
"""Safety factor on a job's expected synthesis time (measured rtf x estimated audio)."""

MIN_RTF = 0.05  # the rtf assumed before one is measured


WIDE_MIN_IDLE_CORES = 1.0
"""A lone job runs wide only while the machine had at least this many cores idle lately.

A wide session's job is only as fast as its slowest thread: on cores that other processes
keep busy, its tail grew (4 clients on a shared 2-core machine: first-audio p95 374-420 ms
narrow, 1571-1637 ms wide; a lone first clause at load 3.5: 1.15x the narrow time)."""


class JobCancelled(Exception):
    """Given to ``on_done`` of a job that was cancelled or dropped by ``close()``."""


@dataclass(frozen=True)
class SynthesisJob:
    """One clause to synthesize for one session.

    ``deadline`` is a ``time.monotonic()`` value by which the job's first audio is needed.
    ``on_audio`` and ``on_done`` run on an inference thread (or, for a job cancelled before
    it started, on the cancelling thread): bridge into asyncio with ``call_soon_threadsafe``.
    ``on_done`` is called exactly once, with None, the synthesis error, or JobCancelled.
    """

    session_id: str
    voice: Voice
    text: str
    deadline: float
    on_audio: Callable[[Int16Array], None]
    on_done: Callable[[BaseException | None], None]


@dataclass(frozen=True)
class SchedulerStats:
    """Counters since start; ``queue_depth`` includes the ``running`` jobs."""

    jobs_done: int
    audio_seconds: float
    synth_seconds: float
    queue_depth: int
    running: int
    jobs_cancelled: int = 0
    jobs_failed: int = 0


@dataclass(eq=False)
class _Entry:
    job: SynthesisJob
    seq: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    wide: bool = False  # runs on the voice's wide session (it started alone)

    def sort_key(self) -> tuple[float, int]:
        return (self.job.deadline, self.seq)


class JobHandle:
    """Lets the submitter cancel one job."""

    def __init__(self, scheduler: SynthesisScheduler, entry: _Entry) -> None:
        self._scheduler = scheduler
        self._entry = entry

    def cancel(self) -> None:
        """Drop the job if queued; if running, stop it before its next chunk is delivered."""
        self._scheduler._cancel_entries([self._entry])

    @property
    def cancelled(self) -> bool:
        """Whether cancel() (or a session cancel, or close) reached this job."""
        return self._entry.cancelled.is_set()


class SynthesisScheduler:
    """EDF queue of clause jobs run by ``threads`` plain threads.

    The heap is ordered by (deadline, submit order); a job submitted late with an earlier
    deadline runs before queued jobs that are due later. Running jobs are not preempted:
    a clause is short, and a voice cannot be paused mid-inference.

    A job not yet due (see :data:`DUE_MARGIN_S`) never takes the last idle thread (with two
    threads or more): it waits until a thread is free beside it, or until it is due.

    A due job that starts while no other job runs or waits gets the voice's wide session
    (:class:`~duplex.worker.adapters.base.WideVoice`) when it has one: the cores would
    otherwise idle, and one client's first audio comes sooner; only while the machine
    had a core idle lately (:data:`WIDE_MIN_IDLE_CORES`, measured by
    :class:`~duplex.worker.idle_cores.IdleCores`). Jobs due later stay narrow:
    their speed does not reach the listener, and the wide session costs more CPU per job.
    """

    def __init__(
        self,
        threads: int,
        *,
        metrics: WorkerPromMetrics | None = None,
        cores_idle: Callable[[], float] | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._thread_count = threads
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Entry]] = []
        self._running: dict[int, _Entry] = {}
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._jobs_done = 0
        self._jobs_cancelled = 0
        self._jobs_failed = 0
        self._audio_seconds = 0.0
        self._synth_seconds = 0.0
        self._ew_audio = 0.0
        self._ew_synth = 0.0
        self._metrics = metrics
        self._cores_idle = cores_idle or IdleCores()
        if metrics is not None:
            metrics.watch_queue_depth(self.queue_depth)

    def start(self) -> None:
        """Start the inference threads (idempotent)."""
        with self._cond:
            if self._closing:
                raise RuntimeError("scheduler is closed")
            if self._threads:
                return
            self._threads = [
                threading.Thread(target=self._work, name=f"duplex-synth-{i}", daemon=True)
                for i in range(self._thread_count)
            ]
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float | None = 10.0) -> None:
        """Cancel every queued and running job and join the threads."""
        with self._cond:
            self._closing = True
            pending = [entry for _, _, entry in self._heap]
            self._heap.clear()
            for entry in (*pending, *self._running.values()):
                entry.cancelled.set()
            self._jobs_cancelled += len(pending)
            self._cond.notify_all()
        for entry in pending:
            self._finish(entry, JobCancelled("scheduler closed"))
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                _LOG.warning(
                    "inference thread still busy after close", extra={"thread": thread.name}
                )

    def submit(self, job: SynthesisJob) -> JobHandle:
        """Queue ``job``; raises RuntimeError once closed."""
        with self._cond:
            if self._closing:
                raise RuntimeError("scheduler is closed")
            entry = _Entry(job, next(self._seq))
            heapq.heappush(self._heap, (job.deadline, entry.seq, entry))
            self._cond.notify()
        return JobHandle(self, entry)

    def cancel_session(self, session_id: str) -> int:
        """Cancel the session's queued and running jobs; returns how many were cancelled."""
        with self._cond:
            entries = [e for _, _, e in self._heap if e.job.session_id == session_id]
            entries += [e for e in self._running.values() if e.job.session_id == session_id]
        return self._cancel_entries(entries)

    def queue_depth(self) -> int:
        """Jobs queued plus jobs running."""
        with self._cond:
            return len(self._heap) + len(self._running)

    def idle_threads(self) -> int:
        """Threads that would start a newly submitted job at once."""
        with self._cond:
            return max(0, self._thread_count - len(self._running) - len(self._heap))

    def rtf(self) -> float:
        """Synthesis seconds per audio second, weighted towards recent jobs (0.0 until known)."""
        with self._cond:
            return self._ew_synth / self._ew_audio if self._ew_audio > 0 else 0.0

    def stats(self) -> SchedulerStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            return SchedulerStats(
                jobs_done=self._jobs_done,
                audio_seconds=self._audio_seconds,
                synth_seconds=self._synth_seconds,
                queue_depth=len(self._heap) + len(self._running),
                running=len(self._running),
                jobs_cancelled=self._jobs_cancelled,
                jobs_failed=self._jobs_failed,
            )

    def _cancel_entries(self, entries: list[_Entry]) -> int:
        removed: list[_Entry] = []
        count = 0
        with self._cond:
            for entry in entries:
                if entry.cancelled.is_set():
                    continue
                entry.cancelled.set()
                count += 1
                if entry.seq not in self._running:
                    removed.append(entry)
            if removed:
                gone = {e.seq for e in removed}
                self._heap = [item for item in self._heap if item[1] not in gone]
                heapq.heapify(self._heap)
                self._jobs_cancelled += len(removed)
        # Outside the lock: on_done may take locks of its own.
        for entry in removed:
            self._finish(entry, JobCancelled("job cancelled"))
        return count

    def _work(self) -> None:
        while True:
            with self._cond:
                entry = self._next_entry()
                if entry is None:
                    return
            try:
                self._run(entry)
            finally:
                with self._cond:
                    self._running.pop(entry.seq, None)
                    # A job held back for a free thread beside it may start now.
                    self._cond.notify()

    def _next_entry(self) -> _Entry | None:
        """Wait (holding the condition) for a job this thread may start; None once closing."""
        while not self._closing:
            if not self._heap:
                self._cond.wait()
                continue
            deadline, _, top = self._heap[0]
            wait = deadline - self._start_by_margin(top.job) - time.monotonic()
            due = wait <= 0
            if due or self._thread_count == 1 or len(self._running) + 2 <= self._thread_count:
                _, _, entry = heapq.heappop(self._heap)
                alone = due and not self._heap and not self._running
                # Asked at every start (cheap, cached) so that its window stays recent.
                idle = self._cores_idle()
                entry.wide = alone and idle >= WIDE_MIN_IDLE_CORES
                self._running[entry.seq] = entry
                return entry
            self._cond.wait(wait)
        return None

    def _start_by_margin(self, job: SynthesisJob) -> float:
        """How long before its deadline a job must start (caller holds the condition)."""
        rtf = self._ew_synth / self._ew_audio if self._ew_audio > 0 else MIN_RTF
        expected = max(rtf, MIN_RTF) * SECONDS_PER_CHAR * len(job.text)
        return DUE_MARGIN_S + SYNTH_ESTIMATE_FACTOR * expected

    def _run(self, entry: _Entry) -> None:
        job = entry.job
        samples = 0
        synth = 0.0
        error: BaseException | None = None
        chunks: Iterator[Int16Array] = iter(())
        try:
            started = time.perf_counter()
            voice = job.voice
            if entry.wide and isinstance(voice, WideVoice):
                chunks = voice.synthesize_wide(job.text)
            else:
                chunks = voice.synthesize(job.text)
            for chunk in chunks:
                synth += time.perf_counter() - started
                if entry.cancelled.is_set():
                    break
                audio = np.asarray(chunk, dtype=np.int16)
                samples += audio.size
                job.on_audio(audio)
                if entry.cancelled.is_set():
                    break
                started = time.perf_counter()
            else:
                synth += time.perf_counter() - started
        except Exception as exc:  # the job's failure is reported, the thread lives on
            error = exc
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
        if error is None and entry.cancelled.is_set():
            error = JobCancelled("job cancelled")
        self._record(job, samples, synth, error)
        self._finish(entry, error)

    def _record(
        self, job: SynthesisJob, samples: int, synth: float, error: BaseException | None
    ) -> None:
        audio = samples / job.voice.sample_rate if samples else 0.0
        with self._cond:
            self._jobs_done += 1
            if isinstance(error, JobCancelled):
                self._jobs_cancelled += 1
            elif error is not None:
                self._jobs_failed += 1
            self._synth_seconds += synth
            self._audio_seconds += audio
            if audio > 0:
                if self._ew_audio == 0.0:
                    self._ew_audio, self._ew_synth = audio, synth
                else:
                    self._ew_audio += RTF_WEIGHT * (audio - self._ew_audio)
                    self._ew_synth += RTF_WEIGHT * (synth - self._ew_synth)
        if self._metrics is not None and error is None:
            # Completed jobs only: a cancelled or failed one says nothing about speed.
            self._metrics.clause_synthesized(job.voice.model_id, synth, audio)

    @staticmethod
    def _finish(entry: _Entry, error: BaseException | None) -> None:
        try:
            entry.job.on_done(error)
        except Exception:  # a broken callback must not kill an inference thread
            _LOG.exception("on_done failed", extra={"session_id": entry.job.session_id})
