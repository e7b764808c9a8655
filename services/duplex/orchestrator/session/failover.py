"""Failover: a session's link to its worker, (re)connecting, and recovering from a failure.

`Link` is the session's current worker stream and its numbering (see `utterance.py` for
how positions map). `Connector` routes a session and opens its stream, at start and after
a failure (then excluding the workers that failed it). `Failover` replaces a failed
stream: another worker gets every pending utterance from its voiced position; when no
worker is left, or after ``max_failovers``, the session ends with the count of characters
that were not spoken.

A clause the failed worker had half sent is not said again from its start: the frames
received of it are kept up to the last word whose audio has all arrived (the barge-in
estimate of `heard.py`), and the next worker starts at that word's end (`Link.cut_partial`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from duplex.audio.frames import PcmFrame, TextSpan
from duplex.orchestrator.errors import DuplexError
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import ErrorCode
from duplex.orchestrator.router import Router
from duplex.orchestrator.session.heard import SpeechRate, is_speech, word_end_at
from duplex.orchestrator.session.utterance import Utterance
from duplex.routing import Decision, NoWorkerAvailable, SessionRequest
from duplex.workerclient import (
    UnknownModelError,
    WorkerCapacityError,
    WorkerClient,
    WorkerClients,
    WorkerCommand,
    WorkerError,
    WorkerStream,
    WorkerStreamError,
    WorkerUtteranceEnd,
)

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Link:
    """The session's current worker stream and its numbering."""

    decision: Decision
    client: WorkerClient
    stream: WorkerStream
    next_utt: int = 0
    by_worker_utt: dict[int, Utterance] = field(default_factory=dict)
    partial_frames: int = 0  # frames queued since the last clause end (a clause half received)
    # The utterance and span (this stream's positions) of the clause half received, and its
    # first and last frames with sound: a clause's rate is learned without its pauses.
    partial: tuple[Utterance, TextSpan] | None = None
    partial_sound: tuple[int, int] | None = None
    rate: SpeechRate = field(default_factory=SpeechRate)  # the session's: set on connect
    last_progress: float = field(default_factory=time.monotonic)
    failed: bool = False
    max_text_chars: int = 0  # the worker's limit per utterance (0: none reported)

    @property
    def worker(self) -> str:
        return self.decision.worker.name

    async def forward(self, utt: Utterance) -> None:
        """Send ``utt``'s next chunk (if any) on this stream; WorkerError if the send fails."""
        chunk = utt.take_chunk()
        if chunk is None:
            return
        text, is_final = chunk
        if utt.worker_utt is None:
            self.assign(utt)
        await self.stream.send_text(text, is_final)
        utt.mark_sent(text, is_final)
        self.last_progress = time.monotonic()

    async def control(self, session_id: str, command: WorkerCommand, timeout_s: float) -> None:
        """PAUSE / RESUME / STOP the session on this worker. A failure is only logged: a dead
        worker is noticed (and replaced) by the receiver, and the local half holds."""
        if command is WorkerCommand.RESUME:
            self.last_progress = time.monotonic()
        try:
            await self.client.control(session_id, command, timeout_s)
        except WorkerError as err:
            log.warning(
                "worker control failed",
                extra={"session_id": session_id, "worker": self.worker,
                       "command": command.value, "error": str(err)},
            )  # fmt: skip

    def assign(self, utt: Utterance) -> None:
        """Give ``utt`` the stream's next utterance number (the worker counts the same way)."""
        utt.worker_utt = self.next_utt
        self.by_worker_utt[self.next_utt] = utt
        self.next_utt += 1

    def frame_owner(self, frame: PcmFrame) -> Utterance | None:
        """The utterance a frame voices; None when it must be dropped (STOP came first)."""
        if frame.span is None:
            raise WorkerStreamError(self.worker, "a frame without its text position")
        utt = self.by_worker_utt.get(frame.span.utterance)
        return None if utt is None or utt.stopped else utt

    def frame_queued(self, utt: Utterance, frame: PcmFrame) -> None:
        """The frame is on its way to the client: the clause it ends counts as voiced."""
        span = frame.span
        assert span is not None
        index = self.partial_frames
        if is_speech(frame.pcm):
            first = self.partial_sound[0] if self.partial_sound else index
            self.partial_sound = (first, index)
        if span.clause_end:
            utt.voiced = utt.base + span.end
            first, last = self.partial_sound or (0, index)  # no sound seen: every frame
            self.rate.clause_voiced(span.end - span.start, last - first + 1)
            self.clear_partial()
        else:
            self.partial_frames += 1
            self.partial = (utt, span)

    def clear_partial(self) -> None:
        self.partial_frames = 0
        self.partial = None
        self.partial_sound = None

    def cut_partial(self, buffered: int) -> int:
        """The stream failed with a clause half received: keep its frames up to the last word
        whose audio has all arrived, and move that utterance's voiced position there, so the
        next worker goes on from that word. ``buffered``: frames not yet sent to the client
        (the newest ones). Returns how many of the newest frames to drop.

        Frames already sent stay heard: when the listener is past the chosen word end
        (inside a word whose audio has not all arrived), the next worker repeats only that
        part of a word, never a whole clause.
        """
        frames, partial, sound = self.partial_frames, self.partial, self.partial_sound
        self.clear_partial()
        if frames == 0 or partial is None:
            return 0
        utt, span = partial
        sent = frames - min(frames, buffered)
        start, end = utt.base + span.start, utt.base + span.end
        lead = sound[0] if sound is not None else 0  # silence before the first word
        # The speech so far spread over the clause at the voice's rate (pauses left out);
        # the clause has not ended, so it never counts as whole.
        spoken = frames - lead
        total = max(spoken + 1, self.rate.frames_for(end - start))
        resume = word_end_at(utt.text, start, end, spoken, total)
        keep = lead + math.ceil((resume - start) / max(end - start, 1) * total)
        keep = min(frames, max(keep, sent))
        if resume > utt.voiced:
            utt.voiced = resume
        log.info(
            "failover resumes mid-clause",
            extra={"worker": self.worker, "clause": utt.text[start:end], "frames": frames,
                   "sent": sent, "estimated_frames": total, "resume_at": resume, "kept": keep},
        )  # fmt: skip
        return frames - keep

    def utterance_ended(self, end: WorkerUtteranceEnd) -> Utterance | None:
        """The utterance the worker finished; None when it had already ended here (STOP)."""
        utt = self.by_worker_utt.pop(end.utterance, None)
        if utt is None or utt.done:
            return None
        if end.stopped:
            # Only our STOP may cut an utterance short; anything else would lose text.
            raise WorkerStreamError(self.worker, "the worker stopped an utterance by itself")
        utt.voiced = utt.base + end.voiced_length
        utt.done = True
        self.clear_partial()
        return utt

    def owes_audio(self, pending: Iterable[Utterance]) -> bool:
        """Whether silence from the worker now means it is stuck.

        Only a final chunk or a clause half received proves the worker has audio to
        send; a non-final clause might still wait in the worker's own segmenter.
        """
        if self.partial_frames > 0:
            return True
        return any(u.final_sent and not u.done and u.worker_utt is not None for u in pending)


LOAD_TIMEOUT_S = 60.0  # a worker loading a model on demand (Kokoro takes seconds)


class ConnectFailed(DuplexError):
    """No worker took the session; ``code`` and ``message`` are what the client is told."""


@dataclass(frozen=True)
class StreamSpec:
    """What a worker stream is opened with (the same on every worker the session uses)."""

    session_id: str
    request: SessionRequest
    sample_rate: int
    lead_ms: int
    open_timeout_s: float
    reference: PcmFrame | None = None  # SessionStart.reference_audio, for zero-shot voices
    speed: float | None = None  # SessionStart.speed (workers with the speed capability)


class Connector:
    """Routes a session and opens its worker stream, trying the next worker when one refuses."""

    def __init__(
        self, router: Router, clients: WorkerClients, metrics: OrchestratorMetrics
    ) -> None:
        self._router = router
        self._clients = clients
        self._metrics = metrics

    async def connect(self, spec: StreamSpec, *, exclude: frozenset[str], attempts: int) -> Link:
        """A stream on a worker not in ``exclude`` within ``attempts`` tries, or ConnectFailed."""
        tried = set(exclude)
        failure: ConnectFailed | None = None
        for _ in range(max(1, attempts)):
            try:
                decision = self._router.route(spec.request, exclude=frozenset(tried))
            except NoWorkerAvailable as exc:
                raise failure or ConnectFailed(ErrorCode.NO_WORKER_AVAILABLE, exc.reason) from exc
            try:
                return await self._open(decision, spec)
            except BaseException as err:
                self._router.release(decision)
                if not isinstance(err, WorkerError):
                    raise
                tried.add(decision.worker.name)
                failure = self._failure(decision.worker.name, err)
                log.warning(
                    "worker could not open the session",
                    extra={"session_id": spec.session_id, "worker": decision.worker.name,
                           "error": str(err)},
                )  # fmt: skip
        assert failure is not None
        raise failure

    def check_model(self, model_id: str | None) -> None:
        """ConnectFailed UNKNOWN_MODEL when no live worker offers ``model_id``."""
        workers = self._router.workers()
        if model_id is None or not workers:
            return
        known = sorted(
            {m for w in workers.values() for m in w.available_models + w.resident_models}
        )
        if model_id not in known:
            raise ConnectFailed(
                ErrorCode.UNKNOWN_MODEL,
                f"unknown model_id {model_id!r}; known models: {', '.join(known)}",
            )

    def _failure(self, worker: str, err: WorkerError) -> ConnectFailed:
        if isinstance(err, UnknownModelError):
            return ConnectFailed(ErrorCode.UNKNOWN_MODEL, err.message)
        if isinstance(err, WorkerCapacityError):
            return ConnectFailed(ErrorCode.CAPACITY, f"worker {worker}: {err.message}")
        self._metrics.worker_errors_total.labels(worker=worker).inc()
        return ConnectFailed(ErrorCode.WORKER_FAILED, f"worker {worker}: {err.message}")

    async def _open(self, decision: Decision, spec: StreamSpec) -> Link:
        client = self._clients.get(decision.worker.target)
        if decision.needs_load and decision.model_id is not None:
            await client.load_model(decision.model_id, timeout_s=LOAD_TIMEOUT_S)
        info = await client.info(timeout_s=spec.open_timeout_s)
        stream = await client.open_stream(
            spec.session_id,
            decision.model_id,
            spec.sample_rate,
            spec.request.language,
            spec.lead_ms,
            timeout_s=spec.open_timeout_s,
            reference=spec.reference,
            speed=spec.speed,
        )
        if stream.opened.sample_rate != spec.sample_rate:
            await stream.close()
            raise WorkerStreamError(
                client.target, f"opened at {stream.opened.sample_rate} Hz, not {spec.sample_rate}"
            )
        return Link(decision, client, stream, max_text_chars=info.max_text_chars)


class Linked(Protocol):
    """What `Failover` needs of a session."""

    session_id: str

    @property
    def link(self) -> Link | None: ...

    async def detach(self, link: Link) -> None:
        """Stop reading ``link``, drop its half-received clause, close it, release its route."""

    async def connect(self, exclude: frozenset[str]) -> Link:
        """Route and open a stream on a worker not in ``exclude``; ConnectFailed if none."""

    async def attach(self, link: Link) -> None:
        """Make ``link`` current: resend what is pending, start reading; WorkerError if not."""

    async def fail(self, why: str) -> None:
        """End the session: Error WORKER_FAILED with the characters not spoken."""


class Failover:
    """Replaces a session's failed worker stream, up to ``max_failovers`` times."""

    def __init__(self, session: Linked, metrics: OrchestratorMetrics, max_failovers: int) -> None:
        self._session = session
        self._metrics = metrics
        self._max = max_failovers
        self._failed: set[str] = set()
        self._count = 0

    async def recover(self, failed: Link, reason: str) -> str | None:
        """Replace ``failed`` (the session's lock is held); the new worker's name, or None
        when the session ended (no worker left)."""
        session = self._session
        if failed is not session.link or failed.failed:
            return None
        first = failed.worker
        link = failed
        began = time.monotonic()
        while True:
            link.failed = True
            self._failed.add(link.worker)
            self._metrics.worker_errors_total.labels(worker=link.worker).inc()
            log.warning(
                "worker stream failed",
                extra={"session_id": session.session_id, "worker": link.worker, "error": reason},
            )
            await session.detach(link)
            self._count += 1
            if self._count > self._max:
                await session.fail(f"worker {first} failed ({reason}); no failovers left")
                return None
            try:
                link = await session.connect(frozenset(self._failed))
            except ConnectFailed as err:
                await session.fail(f"worker {first} failed ({reason}); {err.message}")
                return None
            try:
                await session.attach(link)
            except WorkerError as err:
                reason = str(err)
                continue
            self._metrics.failovers_total.inc()
            log.info(
                "session failed over",
                extra={"session_id": session.session_id, "from": first, "to": link.worker,
                       "took_ms": round((time.monotonic() - began) * 1000, 1)},
            )  # fmt: skip
            return link.worker
