"""One client session: routing, the worker stream, utterances, pacing, control and failover.

Text: each client chunk goes through a ClauseSegmenter; when a clause completes, the text
received so far goes to the worker (the text past the clause end too, so that the
worker's own segmenter, with the same rules, can prove the same boundary: a CJK full
stop or an over-long run needs the next character). The remainder follows with
``is_final`` when the client's chunk is final. So the first clause is spoken before the
client has finished its utterance.

Audio: the receiver task reads the worker stream and queues frames on the pacer; an
utterance's AudioEnd is a pacer marker queued behind its last frame, and AudioEnds keep
the client's utterance order.

STOP: buffered audio is dropped at once and AudioEnd is sent at once (in order) for every
utterance not yet ended; the worker's later frames and UtteranceEnd(stopped) for those
utterances are ignored. The session is then LISTENING.

Failover: a worker stream that errors, ends, or stays silent for ``frame_timeout_s``
while it owes audio is replaced by another worker's stream (routing again without the
failed workers); each pending utterance is resent from its voiced position. If no worker
is left, or after ``max_failovers``, the client gets Error WORKER_FAILED naming how many
characters were not voiced, and the session ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from duplex.audio.frames import frame_bytes
from duplex.orchestrator.config import OrchestratorConfig
from duplex.orchestrator.failover import (
    ConnectFailed,
    Connector,
    Link,
    StreamSpec,
    Utterance,
    unvoiced_chars,
)
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.pacer import Pacer
from duplex.orchestrator.protocol import (
    AudioEnd,
    Control,
    ControlCommand,
    Error,
    ErrorCode,
    ServerMessage,
    SessionStart,
    SessionStarted,
    TextChunk,
    WorkerFailover,
)
from duplex.orchestrator.router import Router
from duplex.orchestrator.worker_client import (
    WorkerClients,
    WorkerError,
    WorkerFrame,
    WorkerStreamError,
)
from duplex.routing import SessionRequest
from duplex.text import ClauseSegmenter

log = logging.getLogger(__name__)

PACER_MAX_FRAMES = 250  # 5 s; the worker's own lead keeps the buffer far below this


class ClientSink(Protocol):
    """What a transport (WebSocket now, WebRTC later) gives a session to talk to its client."""

    async def send_message(self, message: ServerMessage) -> None: ...

    async def send_audio(self, pcm: bytes) -> None: ...


class SessionState(Enum):
    STARTING = "starting"
    LISTENING = "listening"  # nothing to say
    SPEAKING = "speaking"
    PAUSED = "paused"
    CLOSED = "closed"


class SessionError(Exception):
    """A request the session refuses; ``fatal`` means the session ends."""

    def __init__(self, code: ErrorCode, message: str, *, fatal: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fatal = fatal


@dataclass(frozen=True)
class SessionServices:
    """The process-wide parts a session uses (built once by the app)."""

    config: OrchestratorConfig
    router: Router
    clients: WorkerClients
    metrics: OrchestratorMetrics


class Session:
    """One client's session; the transport calls start / on_text / on_control / close."""

    def __init__(self, session_id: str, sink: ClientSink, services: SessionServices) -> None:
        self.session_id = session_id
        self._sink = sink
        self._svc = services
        self._cfg = services.config.session
        self._request = SessionRequest(None, "en")
        self._sample_rate = 48000
        self._max_chars = self._cfg.max_text_chars
        self._started = False
        self._closed = False
        self._closed_reason: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._paused = False
        self._pending: collections.deque[Utterance] = collections.deque()  # AudioEnd not queued
        self._open: Utterance | None = None  # the utterance taking the client's text
        self._next_index = 0
        self._ends_queued = 0  # AudioEnd markers in the pacer
        self._link: Link | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._failed: set[str] = set()
        self._failovers = 0
        self._lock = asyncio.Lock()  # text forwarding, control and failover, one at a time
        self._connector = Connector(services.router, services.clients, services.metrics)
        self._pacer = Pacer(
            self._send_frame,
            lead_ms=self._cfg.output_lead_ms,
            max_buffer=PACER_MAX_FRAMES,
            observe_lateness=services.metrics.frame_send_lateness_seconds.observe,
            name=f"pacer:{session_id}",
        )

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        if self._closed:
            return SessionState.CLOSED
        if not self._started:
            return SessionState.STARTING
        if self._paused:
            return SessionState.PAUSED
        # An utterance the client has not finished is not "speaking" by itself: a client that
        # sends half a sentence and goes away must still reach the idle timeout.
        owed = any(u.final and not u.done for u in self._pending)
        if owed or self._ends_queued or self._pacer.buffered:
            return SessionState.SPEAKING
        return SessionState.LISTENING

    @property
    def worker(self) -> str | None:
        """The worker serving the session now."""
        return self._link.worker if self._link else None

    async def wait_closed(self) -> str:
        """The reason the session ended (by itself, or through `close`)."""
        return await asyncio.shield(self._closed_reason)

    # -- client requests ------------------------------------------------------------------

    async def start(self, msg: SessionStart) -> SessionStarted:
        """Route, open the worker stream; raises SessionError (always fatal) on failure."""
        if self._started or self._closed:
            raise SessionError(ErrorCode.ALREADY_STARTED, "session already started", fatal=False)
        self._request = SessionRequest(msg.model_id, msg.language, tuple(msg.capabilities))
        self._sample_rate = msg.sample_rate
        self._check_model(msg.model_id)
        link = await self._connect(frozenset(), attempts=self._cfg.max_failovers + 1)
        self._link = link
        self._started = True
        self._pacer.start()
        self._start_receiver(link)
        log.info(
            "session started",
            extra={"session_id": self.session_id, "worker": link.worker, "model_id": self.model},
        )
        return SessionStarted(self.session_id, self.model, link.worker, self._sample_rate)

    @property
    def model(self) -> str:
        return self._link.stream.opened.model_id if self._link else (self._request.model_id or "")

    async def on_text(self, msg: TextChunk) -> None:
        """Add client text; raises SessionError(TEXT_TOO_LONG) and drops the chunk if too long."""
        self._require_started()
        async with self._lock:
            if self._closed:
                return
            utt = self._open
            have = len(utt.text) if utt else 0
            if have + len(msg.text) > self._max_chars:
                raise SessionError(
                    ErrorCode.TEXT_TOO_LONG,
                    f"utterance text would be {have + len(msg.text)} characters; "
                    f"the limit is {self._max_chars} (chunk rejected)",
                    fatal=False,
                )
            if utt is None:
                utt = self._new_utterance()
            utt.text += msg.text
            clauses = utt.segmenter.push(msg.text) if msg.text else []
            if msg.is_final:
                clauses += utt.segmenter.finish()
                utt.final = True
                self._open = None
            if clauses:
                utt.ready = len(utt.text)
            link = self._link
            assert link is not None
            try:
                await self._forward(link, utt)
            except WorkerError as err:
                await self._recover(link, str(err))
            self._queue_ends()

    async def on_control(self, msg: Control) -> None:
        """PAUSE / RESUME take effect on the pacer at once; STOP drops buffered audio at once."""
        self._require_started()
        command = msg.command
        if command == ControlCommand.PAUSE:
            self._paused = True
            self._pacer.pause()
        elif command == ControlCommand.RESUME:
            self._paused = False
            self._pacer.resume()
        else:
            self._stop_now()
        async with self._lock:
            link = self._link
            if self._closed or link is None:
                return
            if command == ControlCommand.RESUME:
                link.last_progress = time.monotonic()
            await self._worker_control(link, command.value)

    async def close(self, reason: str) -> None:
        """End the session: tasks cancelled, worker stream closed, routing count released."""
        if self._closed:
            return
        self._closed = True
        receiver, self._receiver = self._receiver, None
        if receiver is not None and receiver is not asyncio.current_task():
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        await self._pacer.aclose()
        link, self._link = self._link, None
        if link is not None:
            await link.stream.close()
            self._svc.router.release(link.decision)
        if not self._closed_reason.done():
            self._closed_reason.set_result(reason)
        log.info("session closed", extra={"session_id": self.session_id, "reason": reason})

    # -- helpers for the requests ---------------------------------------------------------

    def _require_started(self) -> None:
        if not self._started:
            raise SessionError(ErrorCode.NOT_STARTED, "send SessionStart first", fatal=False)

    def _check_model(self, model_id: str | None) -> None:
        workers = self._svc.router.workers()
        if model_id is None or not workers:
            return
        known = sorted(
            {m for w in workers.values() for m in w.available_models + w.resident_models}
        )
        if model_id not in known:
            raise SessionError(
                ErrorCode.UNKNOWN_MODEL,
                f"unknown model_id {model_id!r}; known models: {', '.join(known)}",
                fatal=True,
            )

    def _new_utterance(self) -> Utterance:
        first_max = self._cfg.first_clause_max_chars or None
        utt = Utterance(
            index=self._next_index, segmenter=ClauseSegmenter(first_max_chars=first_max)
        )
        self._next_index += 1
        self._open = utt
        self._pending.append(utt)
        return utt

    def _stop_now(self) -> None:
        """STOP's local half: nothing buffered is sent, every pending utterance ends."""
        self._pacer.clear()
        self._paused = False
        self._pacer.resume()
        for utt in self._pending:
            utt.done = utt.stopped = True
        self._open = None
        if self._link is not None:
            self._link.partial_frames = 0
        self._queue_ends()

    async def _worker_control(self, link: Link, command: str) -> None:
        try:
            await link.client.control(self.session_id, command, timeout_s=self._cfg.open_timeout_s)
        except WorkerError as err:
            # A dead worker is noticed (and replaced) by the receiver; the local half holds.
            log.warning(
                "worker control failed",
                extra={"session_id": self.session_id, "worker": link.worker, "error": str(err)},
            )

    async def _forward(self, link: Link, utt: Utterance) -> None:
        chunk = utt.take_chunk()
        if chunk is None:
            return
        text, is_final = chunk
        if utt.worker_utt is None:
            link.assign(utt)
        await link.stream.send_text(text, is_final)
        utt.mark_sent(text, is_final)
        link.last_progress = time.monotonic()

    def _queue_ends(self) -> None:
        """Queue AudioEnd, in utterance order, for every leading utterance that is done."""
        while self._pending and self._pending[0].done:
            utt = self._pending.popleft()
            self._ends_queued += 1
            self._pacer.push_marker(functools.partial(self._audio_end, utt.index))

    async def _audio_end(self, index: int) -> None:
        self._ends_queued -= 1
        await self._sink.send_message(AudioEnd(index))

    async def _send_frame(self, pcm: bytes) -> None:
        await self._sink.send_audio(pcm)
        self._svc.metrics.frames_sent_total.inc()

    # -- routing and opening --------------------------------------------------------------

    async def _connect(self, exclude: frozenset[str], *, attempts: int) -> Link:
        """Route and open a stream (another worker when one refuses); SessionError if none."""
        spec = StreamSpec(
            self.session_id,
            self._request,
            self._sample_rate,
            self._cfg.worker_lead_ms,
            self._cfg.open_timeout_s,
        )
        try:
            link = await self._connector.connect(spec, exclude=exclude, attempts=attempts)
        except ConnectFailed as exc:
            raise SessionError(exc.code, exc.message, fatal=True) from exc
        if link.max_text_chars > 0:
            # The worker refuses a longer utterance: keep the client's limit under it.
            self._max_chars = min(self._cfg.max_text_chars, link.max_text_chars)
        return link

    # -- the receiver ---------------------------------------------------------------------

    def _start_receiver(self, link: Link) -> None:
        self._receiver = asyncio.create_task(
            self._receive(link), name=f"session-receiver:{self.session_id}"
        )

    async def _receive(self, link: Link) -> None:
        try:
            await self._read_events(link)
        except WorkerError as err:
            async with self._lock:
                await self._recover(link, str(err))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session receiver failed", extra={"session_id": self.session_id})
            await self._end_with_error(ErrorCode.INTERNAL, "internal error", "error")

    async def _read_events(self, link: Link) -> None:
        timeout = self._cfg.frame_timeout_s
        expected = frame_bytes(self._sample_rate)
        while True:
            try:
                event = await link.stream.next_event(timeout / 2)
            except TimeoutError:
                stalled = time.monotonic() - link.last_progress >= timeout
                if stalled and not self._paused and link.owes_audio(self._pending):
                    raise WorkerStreamError(link.worker, f"no audio for {timeout}s") from None
                continue
            if event is None:
                raise WorkerStreamError(link.worker, "stream ended")
            link.last_progress = time.monotonic()
            if isinstance(event, WorkerFrame):
                if len(event.pcm) != expected:
                    raise WorkerStreamError(link.worker, f"frame of {len(event.pcm)} bytes")
                utt = link.frame_owner(event)
                if utt is None:
                    continue  # a frame already on its way when STOP came
                await self._pacer.push(event.pcm)
                link.frame_queued(utt, event)
                if not utt.first_frame_queued:
                    utt.first_frame_queued = True
                    self._pacer.push_marker(functools.partial(self._first_audio, utt))
            elif link.utterance_ended(event) is not None:
                self._queue_ends()

    async def _first_audio(self, utt: Utterance) -> None:
        if utt.stopped:
            return
        self._svc.metrics.first_audio_seconds.observe(time.monotonic() - utt.first_text_at)

    # -- failover -------------------------------------------------------------------------

    async def _recover(self, failed: Link, reason: str) -> None:
        """Replace a failed stream (the lock is held); ends the session if none is left."""
        if failed is not self._link or failed.failed or self._closed:
            return
        first = failed.worker
        link: Link | None = failed
        while link is not None:
            link.failed = True
            self._failed.add(link.worker)
            self._svc.metrics.worker_errors_total.labels(worker=link.worker).inc()
            log.warning(
                "worker stream failed",
                extra={"session_id": self.session_id, "worker": link.worker, "error": reason},
            )
            await self._drop_link(link)
            self._failovers += 1
            if self._failovers > self._cfg.max_failovers:
                await self._fail_all(f"worker {first} failed ({reason}); no failovers left")
                return
            try:
                link = await self._connect(frozenset(self._failed), attempts=1)
            except SessionError as err:
                await self._fail_all(f"worker {first} failed ({reason}); {err.message}")
                return
            self._link = link
            try:
                if self._paused:
                    await link.client.control(self.session_id, "PAUSE", self._cfg.open_timeout_s)
                for utt in list(self._pending):
                    utt.rebase()
                    await self._forward(link, utt)
            except WorkerError as err:
                reason = str(err)
                continue
            self._queue_ends()
            self._svc.metrics.failovers_total.inc()
            await self._sink.send_message(WorkerFailover(first, link.worker))
            self._start_receiver(link)
            log.info(
                "session failed over",
                extra={"session_id": self.session_id, "from": first, "to": link.worker},
            )
            link = None

    async def _drop_link(self, link: Link) -> None:
        receiver = self._receiver
        if receiver is not None and receiver is not asyncio.current_task():
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
            self._receiver = None
        # Else this is the receiver itself: it stays referenced (so close() can cancel it)
        # until the next receiver replaces it, and returns right after the failover.
        # Frames of a clause the worker did not finish: the new worker says it again.
        self._pacer.drop_tail(link.partial_frames)
        link.partial_frames = 0
        await link.stream.close()
        self._svc.router.release(link.decision)
        if self._link is link:
            self._link = None

    async def _fail_all(self, why: str) -> None:
        lost = unvoiced_chars(self._pending)
        await self._end_with_error(
            ErrorCode.WORKER_FAILED,
            f"{why}; {lost} characters of text were not spoken",
            "worker_failed",
        )

    async def _end_with_error(self, code: ErrorCode, message: str, reason: str) -> None:
        """Let the audio already voiced play out, report the error, end the session."""
        played = asyncio.Event()

        async def mark() -> None:
            played.set()

        self._pacer.push_marker(mark)
        budget = self._pacer.buffered * 0.02 + 1.0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget):
                await played.wait()
        with contextlib.suppress(Exception):
            await self._sink.send_message(Error(code, message))
        await self.close(reason)
