"""Failover: text positions across worker streams, and (re)connecting a session to a worker.

A client utterance keeps its own numbering and its whole text; the worker stream that
voices it numbers utterances from 0 and counts text positions from where it was handed
the text. After a failover the new stream starts at the last voiced position of each
pending utterance (``base``), so a worker position ``p`` is client position ``base + p``.

`Connector` routes a session and opens its stream, at start and after a failure (then
excluding the workers that failed it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import ErrorCode
from duplex.orchestrator.router import Router
from duplex.orchestrator.worker_client import (
    UnknownModelError,
    WorkerCapacityError,
    WorkerClient,
    WorkerClients,
    WorkerError,
    WorkerFrame,
    WorkerStream,
    WorkerStreamError,
    WorkerUtteranceEnd,
)
from duplex.routing import Decision, NoWorkerAvailable, SessionRequest
from duplex.text import ClauseSegmenter

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Utterance:
    """One client utterance: every position here is in the client's text."""

    index: int
    segmenter: ClauseSegmenter
    text: str = ""
    final: bool = False  # the client's final chunk arrived
    ready: int = 0  # text[:ready] may go to the worker (a clause ended within it)
    base: int = 0  # client position of the current stream's position 0
    forwarded: int = 0  # text[:forwarded] went to the current stream
    voiced: int = 0  # end of the last clause the worker finished voicing
    worker_utt: int | None = None  # its number on the current stream, once text went there
    final_sent: bool = False
    done: bool = False  # ended by the worker, by STOP, or had nothing to voice
    stopped: bool = False
    first_text_at: float = field(default_factory=time.monotonic)
    first_frame_queued: bool = False

    @property
    def unvoiced(self) -> int:
        return 0 if self.done else len(self.text) - self.voiced

    def take_chunk(self) -> tuple[str, bool] | None:
        """The next chunk for the current stream and its is_final, or None (nothing to send).

        An utterance whose stream has none of it yet never starts with blank text (the
        worker refuses an empty first chunk, and whitespace has nothing to voice): a blank
        final remainder completes it here instead.
        """
        if self.done or self.final_sent:
            return None
        end = len(self.text) if self.final else self.ready
        chunk = self.text[self.forwarded : end]
        if self.worker_utt is None and not chunk.strip():
            if self.final:
                self.voiced = len(self.text)
                self.done = True
            return None
        if not chunk and not self.final:
            return None
        return chunk, self.final

    def mark_sent(self, chunk: str, is_final: bool) -> None:
        self.forwarded += len(chunk)
        self.final_sent = is_final

    def rebase(self) -> None:
        """A new stream takes over: it gets the text from the voiced position on."""
        self.base = self.forwarded = self.voiced
        self.worker_utt = None
        self.final_sent = False


@dataclass(eq=False)
class Link:
    """The session's current worker stream and its numbering."""

    decision: Decision
    client: WorkerClient
    stream: WorkerStream
    next_utt: int = 0
    by_worker_utt: dict[int, Utterance] = field(default_factory=dict)
    partial_frames: int = 0  # frames queued since the last clause end (a clause half received)
    last_progress: float = field(default_factory=time.monotonic)
    failed: bool = False
    max_text_chars: int = 0  # the worker's limit per utterance (0: none reported)

    @property
    def worker(self) -> str:
        return self.decision.worker.name

    def assign(self, utt: Utterance) -> None:
        """Give ``utt`` the stream's next utterance number (the worker counts the same way)."""
        utt.worker_utt = self.next_utt
        self.by_worker_utt[self.next_utt] = utt
        self.next_utt += 1

    def frame_owner(self, frame: WorkerFrame) -> Utterance | None:
        """The utterance a frame voices; None when it must be dropped (STOP came first)."""
        utt = self.by_worker_utt.get(frame.utterance)
        return None if utt is None or utt.stopped else utt

    def frame_queued(self, utt: Utterance, frame: WorkerFrame) -> None:
        """The frame is on its way to the client: the clause it ends counts as voiced."""
        if frame.clause_end:
            utt.voiced = utt.base + frame.text_end
            self.partial_frames = 0
        else:
            self.partial_frames += 1

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
        self.partial_frames = 0
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


class ConnectFailed(Exception):
    """No worker took the session; ``code`` and ``message`` are what the client is told."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StreamSpec:
    """What a worker stream is opened with (the same on every worker the session uses)."""

    session_id: str
    request: SessionRequest
    sample_rate: int
    lead_ms: int
    open_timeout_s: float


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
        )
        if stream.opened.sample_rate != spec.sample_rate:
            await stream.close()
            raise WorkerStreamError(
                client.target, f"opened at {stream.opened.sample_rate} Hz, not {spec.sample_rate}"
            )
        return Link(decision, client, stream, max_text_chars=info.max_text_chars)


def unvoiced_chars(pending: Iterable[Utterance]) -> int:
    """Characters received from the client that no worker has voiced."""
    return sum(u.unvoiced for u in pending)
