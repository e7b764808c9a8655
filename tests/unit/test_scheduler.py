"""The EDF synthesis scheduler: ordering, cancellation, measured rtf, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from duplex.worker.scheduler import JobCancelled, SynthesisJob, SynthesisScheduler

WAIT_S = 5.0  # generous bound for thread hand-offs; tests do not measure it


class GatedVoice:
    """Fake voice: per text, yields one chunk, then optionally waits for a gate, then another."""

    model_id = "fake"
    sample_rate = 1000

    def __init__(self) -> None:
        self.started: dict[str, threading.Event] = {}
        self.gates: dict[str, threading.Event] = {}
        self.order: list[str] = []
        self._lock = threading.Lock()

    def gate(self, text: str) -> threading.Event:
        with self._lock:
            return self.gates.setdefault(text, threading.Event())

    def started_event(self, text: str) -> threading.Event:
        with self._lock:
            return self.started.setdefault(text, threading.Event())

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        with self._lock:
            self.order.append(text)
        self.started_event(text).set()
        if text.startswith("fail"):
            raise RuntimeError("engine broke")
        yield np.ones(100, np.int16)
        if text.startswith("block"):
            assert self.gate(text).wait(WAIT_S)
        yield np.ones(100, np.int16)

    def close(self) -> None:
        pass


class Recorder:
    """Collects on_audio / on_done calls per job, from any thread."""

    def __init__(self) -> None:
        self.audio: dict[str, int] = {}
        self.done: dict[str, BaseException | None] = {}
        self.finished: dict[str, threading.Event] = {}
        self.done_order: list[str] = []
        self._lock = threading.Lock()

    def job(
        self, voice: GatedVoice, text: str, deadline: float, session: str = "s"
    ) -> SynthesisJob:
        with self._lock:
            self.finished[text] = threading.Event()
            self.audio[text] = 0

        def on_audio(chunk: np.ndarray) -> None:
            with self._lock:
                self.audio[text] += chunk.size

        def on_done(error: BaseException | None) -> None:
            with self._lock:
                self.done[text] = error
                self.done_order.append(text)
            self.finished[text].set()

        return SynthesisJob(session, voice, text, deadline, on_audio, on_done)

    def wait(self, *texts: str) -> None:
        for text in texts:
            assert self.finished[text].wait(WAIT_S), f"{text} never finished"


@pytest.fixture
def scheduler() -> Iterator[SynthesisScheduler]:
    sched = SynthesisScheduler(threads=1)
    sched.start()
    yield sched
    sched.close()


def test_jobs_run_in_deadline_order_not_submit_order(scheduler: SynthesisScheduler) -> None:
    """With the thread busy, a later-submitted job with an earlier deadline jumps the queue."""
    voice, rec = GatedVoice(), Recorder()
    scheduler.submit(rec.job(voice, "block-first", deadline=0.0))
    assert voice.started_event("block-first").wait(WAIT_S)
    scheduler.submit(rec.job(voice, "due-30", deadline=30.0))
    scheduler.submit(rec.job(voice, "due-20", deadline=20.0))
    scheduler.submit(rec.job(voice, "due-10", deadline=10.0))
    voice.gate("block-first").set()
    rec.wait("block-first", "due-30", "due-20", "due-10")
    assert voice.order == ["block-first", "due-10", "due-20", "due-30"]
    assert all(rec.done[t] is None for t in voice.order)
    assert all(rec.audio[t] == 200 for t in voice.order)


def test_equal_deadlines_keep_submit_order(scheduler: SynthesisScheduler) -> None:
    """Ties are broken by submit order."""
    voice, rec = GatedVoice(), Recorder()
    scheduler.submit(rec.job(voice, "block-first", deadline=0.0))
    assert voice.started_event("block-first").wait(WAIT_S)
    for name in ("a", "b", "c"):
        scheduler.submit(rec.job(voice, name, deadline=5.0))
    voice.gate("block-first").set()
    rec.wait("a", "b", "c")
    assert voice.order == ["block-first", "a", "b", "c"]


def test_queue_depth_counts_queued_and_running(scheduler: SynthesisScheduler) -> None:
    """queue_depth() and stats() include the running job."""
    voice, rec = GatedVoice(), Recorder()
    scheduler.submit(rec.job(voice, "block-first", deadline=0.0))
    assert voice.started_event("block-first").wait(WAIT_S)
    scheduler.submit(rec.job(voice, "x", deadline=1.0))
    scheduler.submit(rec.job(voice, "y", deadline=2.0))
    assert scheduler.queue_depth() == 3
    stats = scheduler.stats()
    assert (stats.queue_depth, stats.running) == (3, 1)
    voice.gate("block-first").set()
    rec.wait("block-first", "x", "y")
    deadline = time.monotonic() + WAIT_S
    while scheduler.queue_depth() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert scheduler.queue_depth() == 0
    assert scheduler.stats().jobs_done == 3


def test_cancel_session_cancels_only_that_session(scheduler: SynthesisScheduler) -> None:
    """Queued and running jobs of one session are cancelled; another session's job runs."""
    voice, rec = GatedVoice(), Recorder()
    scheduler.submit(rec.job(voice, "block-s1", deadline=0.0, session="s1"))
    assert voice.started_event("block-s1").wait(WAIT_S)
    scheduler.submit(rec.job(voice, "s1-b", deadline=1.0, session="s1"))
    scheduler.submit(rec.job(voice, "s2-c", deadline=2.0, session="s2"))
    scheduler.submit(rec.job(voice, "s1-d", deadline=3.0, session="s1"))
    assert scheduler.cancel_session("s1") == 3
    assert scheduler.cancel_session("s1") == 0  # already cancelled
    voice.gate("block-s1").set()
    rec.wait("block-s1", "s1-b", "s2-c", "s1-d")
    assert isinstance(rec.done["s1-b"], JobCancelled)
    assert isinstance(rec.done["s1-d"], JobCancelled)
    assert isinstance(rec.done["block-s1"], JobCancelled)
    assert rec.audio["block-s1"] <= 100  # the chunk after the cancel was not delivered
    assert rec.done["s2-c"] is None and rec.audio["s2-c"] == 200
    assert voice.order == ["block-s1", "s2-c"]
    assert scheduler.stats().jobs_cancelled == 3


def test_handle_cancel_stops_a_running_job_between_chunks(scheduler: SynthesisScheduler) -> None:
    """Cancelling a running job delivers no further audio and reports JobCancelled."""
    voice, rec = GatedVoice(), Recorder()
    handle = scheduler.submit(rec.job(voice, "block-1", deadline=0.0))
    assert voice.started_event("block-1").wait(WAIT_S)
    handle.cancel()
    assert handle.cancelled
    voice.gate("block-1").set()
    rec.wait("block-1")
    assert isinstance(rec.done["block-1"], JobCancelled)
    assert rec.audio["block-1"] <= 100


def test_synthesis_error_is_reported_and_thread_survives(scheduler: SynthesisScheduler) -> None:
    """A failing voice gives on_done(error); the next job still runs."""
    voice, rec = GatedVoice(), Recorder()
    scheduler.submit(rec.job(voice, "fail-1", deadline=0.0))
    scheduler.submit(rec.job(voice, "ok", deadline=1.0))
    rec.wait("fail-1", "ok")
    assert isinstance(rec.done["fail-1"], RuntimeError)
    assert rec.done["ok"] is None
    assert scheduler.stats().jobs_failed == 1


def test_rtf_is_measured_from_synthesis_time() -> None:
    """rtf() is 0.0 until a job ran, then synthesis seconds per audio second."""

    class SlowVoice:
        model_id = "slow"
        sample_rate = 1000

        def synthesize(self, text: str) -> Iterator[np.ndarray]:
            for _ in range(2):
                time.sleep(0.05)
                yield np.zeros(500, np.int16)  # 0.5 s of audio per 50 ms of work

        def close(self) -> None:
            pass

    sched = SynthesisScheduler(threads=1)
    sched.start()
    try:
        assert sched.rtf() == 0.0
        done = threading.Event()
        sched.submit(SynthesisJob("s", SlowVoice(), "x", 0.0, lambda a: None, lambda e: done.set()))
        assert done.wait(WAIT_S)
        stats = sched.stats()
        assert stats.audio_seconds == pytest.approx(1.0)
        assert stats.synth_seconds >= 0.1
        assert 0.1 <= sched.rtf() < 1.0  # 0.1 s of work for 1 s of audio, plus scheduling noise
    finally:
        sched.close()


def test_close_cancels_pending_jobs_and_ends_threads() -> None:
    """close() gives queued jobs JobCancelled, joins the threads, and refuses new jobs."""
    sched = SynthesisScheduler(threads=2)
    sched.start()
    voice, rec = GatedVoice(), Recorder()
    sched.submit(rec.job(voice, "block-a", deadline=0.0))
    sched.submit(rec.job(voice, "block-b", deadline=0.0))
    assert voice.started_event("block-a").wait(WAIT_S)
    assert voice.started_event("block-b").wait(WAIT_S)
    sched.submit(rec.job(voice, "queued", deadline=1.0))
    closer = threading.Thread(target=sched.close)
    closer.start()
    rec.wait("queued")  # dropped while both threads are still busy
    voice.gate("block-a").set()
    voice.gate("block-b").set()
    closer.join(WAIT_S)
    assert not closer.is_alive()
    rec.wait("block-a", "block-b")
    assert isinstance(rec.done["queued"], JobCancelled)
    assert isinstance(rec.done["block-a"], JobCancelled)
    assert not [t for t in threading.enumerate() if t.name.startswith("duplex-synth-")]
    with pytest.raises(RuntimeError, match="closed"):
        sched.submit(rec.job(voice, "late", deadline=0.0))


def test_threads_must_be_positive() -> None:
    """A pool needs at least one thread."""
    with pytest.raises(ValueError):
        SynthesisScheduler(threads=0)


def test_idle_threads_counts_threads_free_for_a_new_job() -> None:
    """Idle threads: thread count less running and queued jobs, never negative."""
    scheduler = SynthesisScheduler(2)
    assert scheduler.idle_threads() == 2
    scheduler.close()


class WideGatedVoice(GatedVoice):
    """GatedVoice with a wide session: records which texts ran on it."""

    def __init__(self) -> None:
        super().__init__()
        self.wide: list[str] = []

    def synthesize_wide(self, text: str) -> Iterator[np.ndarray]:
        self.wide.append(text)
        return self.synthesize(text)


def test_a_lone_job_runs_wide_and_a_job_beside_another_runs_narrow() -> None:
    """The only job gets the wide session; one that starts while another runs does not."""
    scheduler = SynthesisScheduler(2, cores_idle=lambda: 2.0)
    scheduler.start()
    try:
        voice, rec = WideGatedVoice(), Recorder()
        scheduler.submit(rec.job(voice, "block-alone", deadline=0.0))
        assert voice.started_event("block-alone").wait(WAIT_S)
        scheduler.submit(rec.job(voice, "beside", deadline=1.0))
        rec.wait("beside")
        voice.gate("block-alone").set()
        rec.wait("block-alone")
        scheduler.submit(rec.job(voice, "alone-again", deadline=2.0))
        rec.wait("alone-again")
        assert voice.wide == ["block-alone", "alone-again"]
        assert all(rec.done[t] is None for t in ("block-alone", "beside", "alone-again"))
    finally:
        scheduler.close()


def test_a_voice_without_a_wide_session_runs_lone_jobs_as_usual(
    scheduler: SynthesisScheduler,
) -> None:
    """Voices that are not WideVoice (tone, fakes) are unaffected."""
    voice, rec = GatedVoice(), Recorder()
    scheduler.submit(rec.job(voice, "alone", deadline=0.0))
    rec.wait("alone")
    assert rec.done["alone"] is None and rec.audio["alone"] == 200


def test_a_job_due_later_leaves_the_last_idle_thread_to_a_job_due_now() -> None:
    """Two threads, one busy with a continuation: a second continuation (due in a minute)
    waits, so a first clause due now starts at once; the continuation runs once a thread
    beside it is free."""
    scheduler = SynthesisScheduler(2)
    scheduler.start()
    try:
        voice, rec = WideGatedVoice(), Recorder()
        later = time.monotonic() + 60
        scheduler.submit(rec.job(voice, "block-continuation", deadline=later))
        assert voice.started_event("block-continuation").wait(WAIT_S)
        scheduler.submit(rec.job(voice, "next-continuation", deadline=later))
        scheduler.submit(rec.job(voice, "first-clause", deadline=time.monotonic()))
        rec.wait("first-clause")
        assert "next-continuation" not in voice.order
        voice.gate("block-continuation").set()
        rec.wait("block-continuation", "next-continuation")
        assert voice.order == ["block-continuation", "first-clause", "next-continuation"]
        # Only a due job that started alone ran wide; continuations never do.
        assert voice.wide == []
    finally:
        scheduler.close()


def test_a_lone_job_runs_narrow_when_other_processes_keep_the_cores_busy() -> None:
    """No idle core on the machine (load from elsewhere): the lone job stays on one thread."""
    scheduler = SynthesisScheduler(2, cores_idle=lambda: 0.4)
    scheduler.start()
    try:
        voice, rec = WideGatedVoice(), Recorder()
        scheduler.submit(rec.job(voice, "alone", deadline=0.0))
        rec.wait("alone")
        assert voice.wide == [] and rec.done["alone"] is None
    finally:
        scheduler.close()
