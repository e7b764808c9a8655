"""One client session: routing, the worker stream, utterances, pacing and interruption.

Text: each client chunk goes through a ClauseSegmenter; once a clause completes, the text so
far goes to the worker (with what follows the clause end, so the worker's own segmenter can
prove the same boundary); the rest follows with ``is_final``. So the first clause is spoken
before the client has finished its utterance.

Audio: the receiver reads the worker stream (`receiver.py`) and queues frames on the
`Output` with their client text positions; AudioEnds follow their last frame, in order.

Interruption: `interrupt()` is the one way output stops early, for STOP and for barge-in:
silent within a frame, then either every pending utterance ends (the worker is STOPped) or,
for a barge-in that may prove false, the rest is held (the worker PAUSEd) until
`resume_output()` or another `interrupt()`. Failover: see `failover.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.errors import DuplexError
from duplex.orchestrator.protocol import (
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
from duplex.orchestrator.session.failover import (
    ConnectFailed,
    Connector,
    Failover,
    Link,
    StreamSpec,
)
from duplex.orchestrator.session.heard import SpeechRate
from duplex.orchestrator.session.output import Cut, Output
from duplex.orchestrator.session.receiver import read_worker_events
from duplex.orchestrator.session.services import SessionServices
from duplex.orchestrator.session.state import SessionState, StateEvent, StateMachine
from duplex.orchestrator.session.utterance import Utterance, unvoiced_chars
from duplex.orchestrator.transports.base import ClientChannel
from duplex.routing import SessionRequest
from duplex.text import ClauseSegmenter
from duplex.workerclient import WorkerCommand, WorkerError

log = logging.getLogger(__name__)


class SessionError(DuplexError):
    """A request the session refuses; ``fatal`` means the session ends."""

    def __init__(self, code: ErrorCode, message: str, *, fatal: bool) -> None:
        super().__init__(code, message)
        self.fatal = fatal


class Session:
    """One client's session; its connection calls start / on_text / on_control / close."""

    def __init__(self, session_id: str, channel: ClientChannel, services: SessionServices) -> None:
        self.session_id = session_id
        self.channel = channel
        self._svc = services
        self._cfg = services.config.session
        self._request = SessionRequest(None, "en")
        self._reference: PcmFrame | None = None  # SessionStart.reference_audio (zero-shot)
        self._speed: float | None = None  # SessionStart.speed; None: the model's own rate
        self._sample_rate = 48000
        self._max_chars = self._cfg.max_text_chars
        self._machine = StateMachine(session_id)
        self._closed_reason: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending: collections.deque[Utterance] = collections.deque()  # AudioEnd not queued
        self._open: Utterance | None = None  # the utterance taking the client's text
        self._next_index = 0
        self._link: Link | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # text forwarding, control and failover, one at a time
        self._connector = Connector(services.router, services.clients, services.metrics)
        self._failover = Failover(self, services.metrics, self._cfg.max_failovers)
        self._speech_rate = SpeechRate()  # the voice's, across the workers that serve it
        self._out = Output(
            channel,
            services.metrics,
            lead_ms=self._cfg.output_lead_ms,
            on_change=self._refresh,
            name=f"pacer:{session_id}",
        )
        self._pacer = self._out.pacer

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._machine.state

    @property
    def worker(self) -> str | None:
        """The worker serving the session now."""
        return self._link.worker if self._link else None

    @property
    def link(self) -> Link | None:
        return self._link

    @property
    def model(self) -> str:
        return self._link.stream.opened.model_id if self._link else (self._request.model_id or "")

    @property
    def first_audio_ms(self) -> float | None:
        return self._out.first_audio_ms

    @property
    def pacer_task(self) -> asyncio.Task[None] | None:
        return self._pacer.task

    async def wait_closed(self) -> str:
        """The reason the session ended (by itself, or through `close`)."""
        return await asyncio.shield(self._closed_reason)

    def _refresh(self) -> None:
        """LISTENING <-> SPEAKING from what is owed to the client now. An utterance the client
        has not finished is not "speaking" by itself: a client that sends half a sentence and
        goes away must still reach the idle timeout."""
        owed = any(u.final and not u.done for u in self._pending) or self._out.busy
        self._machine.fire(StateEvent.AUDIO_OWED if owed else StateEvent.AUDIO_DONE)

    # -- client requests ------------------------------------------------------------------

    async def start(self, msg: SessionStart) -> SessionStarted:
        """Route, open the worker stream; raises SessionError on failure."""
        if self.state is not SessionState.STARTING:
            raise SessionError(ErrorCode.ALREADY_STARTED, "session already started", fatal=False)
        capabilities = tuple(msg.capabilities)
        if msg.reference_audio is not None and "zero_shot" not in capabilities:
            # A voice from reference audio: only a worker that can clone one may take it.
            capabilities += ("zero_shot",)
        self._speed = None if msg.speed in (None, 1.0) else msg.speed
        if self._speed is not None and "speed" not in capabilities:
            # Another speaking rate: only a worker whose models can change theirs.
            capabilities += ("speed",)
        self._request = SessionRequest(msg.model_id, msg.language, capabilities)
        self._reference = msg.reference_audio
        self._sample_rate = msg.sample_rate
        try:
            self._connector.check_model(msg.model_id)
            link = await self.connect(frozenset(), attempts=self._cfg.max_failovers + 1)
        except ConnectFailed as exc:
            raise SessionError(exc.code, exc.message, fatal=True) from exc
        self._link = link
        self._machine.fire(StateEvent.STARTED)
        self._pacer.start()
        self._start_receiver(link)
        return SessionStarted(self.session_id, self.model, link.worker, self._sample_rate)

    async def on_text(self, msg: TextChunk) -> None:
        """Add client text; raises SessionError(TEXT_TOO_LONG) and drops the chunk if too long."""
        self._require_started()
        async with self._lock:
            if self.state is SessionState.CLOSED:
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
                await link.forward(utt)
            except WorkerError as err:
                await self._recover(link, str(err))
            self._queue_ends()
            self._refresh()

    async def on_control(self, msg: Control) -> None:
        """PAUSE / RESUME take effect on the pacer at once; STOP is an `interrupt()`."""
        self._require_started()
        if msg.command is ControlCommand.STOP:
            await self.interrupt(hold=False)
            return
        if msg.command is ControlCommand.PAUSE:
            self._machine.fire(StateEvent.PAUSE)
            self._pacer.pause()
            command = WorkerCommand.PAUSE
        else:
            self._pacer.resume()
            self._machine.fire(StateEvent.RESUME)
            self._refresh()
            command = WorkerCommand.RESUME
        await self._worker_control(command)

    async def interrupt(
        self,
        *,
        hold: bool,
        fade_ms: int = 0,
        announce: Callable[[Cut], Awaitable[None]] | None = None,
    ) -> Cut:
        """Silence the output now; returns what the listener heard.

        ``hold``: keep the unsent audio and PAUSE the worker (a barge-in that may prove
        false; `resume_output()` or another `interrupt()` settles it). Otherwise every
        pending utterance ends here and the worker is STOPped. ``fade_ms`` > 0 sends the next
        frame faded to zero over that long as the last one, so the cut does not click.
        ``announce`` runs once the output is silent, before any AudioEnd the cut causes.
        """
        self._require_started()
        await self._out.cut(fade_ms)
        cut = Cut(self._out.heard(list(self._pending)), time.monotonic())
        if announce is not None:
            await announce(cut)
        if hold:
            self._machine.fire(StateEvent.BARGE_IN)
            await self._worker_control(WorkerCommand.PAUSE)
            return cut
        self._pacer.clear()
        self._pacer.resume()
        for utt in self._pending:
            utt.done = utt.stopped = True
        self._open = None
        if self._link is not None:
            self._link.clear_partial()
        self._queue_ends()
        self._machine.fire(StateEvent.STOP)
        self._refresh()
        await self._worker_control(WorkerCommand.STOP)
        return cut

    async def resume_output(self) -> None:
        """After a held interruption: the utterance goes on from the cut."""
        if self.state is not SessionState.BARGED_IN:
            return
        self._pacer.resume()
        self._machine.fire(StateEvent.BARGE_IN_RESUMED)
        self._refresh()
        await self._worker_control(WorkerCommand.RESUME)

    async def send(self, message: ServerMessage) -> None:
        await self._out.send(message)

    async def close(self, reason: str) -> None:
        """End the session: tasks cancelled, worker stream closed, routing count released."""
        if self.state is SessionState.CLOSED:
            return
        self._machine.fire(StateEvent.CLOSE)
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

    def _require_started(self) -> None:
        if self.state is SessionState.STARTING:
            raise SessionError(ErrorCode.NOT_STARTED, "send SessionStart first", fatal=False)

    def _new_utterance(self) -> Utterance:
        first_max = self._cfg.first_clause_max_chars or None
        utt = Utterance(
            index=self._next_index, segmenter=ClauseSegmenter(first_max_chars=first_max)
        )
        self._next_index += 1
        self._open = utt
        self._pending.append(utt)
        return utt

    async def _worker_control(self, command: WorkerCommand) -> None:
        async with self._lock:
            link = self._link
            if self.state is SessionState.CLOSED or link is None:
                return
            if command is WorkerCommand.RESUME:
                link.last_progress = time.monotonic()
            await link.control(self.session_id, command, self._cfg.open_timeout_s)

    def _queue_ends(self) -> None:
        """Queue AudioEnd, in utterance order, for every leading utterance that is done."""
        while self._pending and self._pending[0].done:
            utt = self._pending.popleft()
            self._out.queue_end(utt.index)

    # -- routing, opening and failover (the `Linked` side of `Failover`) -----------------

    async def connect(self, exclude: frozenset[str], *, attempts: int = 1) -> Link:
        """Route and open a stream (another worker when one refuses); ConnectFailed if none."""
        spec = StreamSpec(
            self.session_id,
            self._request,
            self._sample_rate,
            self._cfg.worker_lead_ms,
            self._cfg.open_timeout_s,
            self._reference,
            self._speed,
        )
        link = await self._connector.connect(spec, exclude=exclude, attempts=attempts)
        link.rate = self._speech_rate
        if link.max_text_chars > 0:
            # The worker refuses a longer utterance: keep the client's limit under it.
            self._max_chars = min(self._cfg.max_text_chars, link.max_text_chars)
        return link

    async def detach(self, link: Link) -> None:
        receiver = self._receiver
        if receiver is not None and receiver is not asyncio.current_task():
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
            self._receiver = None
        # Else this is the receiver itself: it stays referenced (so close() can cancel it)
        # until the next receiver replaces it, and returns right after the failover.
        # A clause the worker did not finish: what arrived plays on up to a word end, and the
        # new worker goes on from there (attach() rebases every pending utterance).
        self._pacer.drop_tail(link.cut_partial(self._pacer.buffered))
        await link.stream.close()
        self._svc.router.release(link.decision)
        if self._link is link:
            self._link = None

    async def attach(self, link: Link) -> None:
        self._link = link
        if self.state in (SessionState.PAUSED, SessionState.BARGED_IN):
            await link.client.control(self.session_id, WorkerCommand.PAUSE, 5.0)
        for utt in list(self._pending):
            utt.rebase()
            await link.forward(utt)
        self._queue_ends()
        self._start_receiver(link)

    async def fail(self, why: str) -> None:
        lost = unvoiced_chars(self._pending)
        await self._end_with_error(
            ErrorCode.WORKER_FAILED,
            f"{why}; {lost} characters of text were not spoken",
            "worker_failed",
        )

    async def _recover(self, failed: Link, reason: str) -> None:
        """Replace a failed stream (the lock is held); ends the session if none is left."""
        if self.state is SessionState.CLOSED:
            return
        first = failed.worker
        to = await self._failover.recover(failed, reason)
        if to is not None:
            await self.send(WorkerFailover(first, to))

    def _start_receiver(self, link: Link) -> None:
        self._receiver = asyncio.create_task(
            self._receive(link), name=f"session-receiver:{self.session_id}"
        )

    async def _receive(self, link: Link) -> None:
        try:
            await read_worker_events(
                link,
                sample_rate=self._sample_rate,
                frame_timeout_s=self._cfg.frame_timeout_s,
                pending=self._pending,
                held=lambda: self.state in (SessionState.PAUSED, SessionState.BARGED_IN),
                on_frame=self._queue_frame,
                on_utterance_end=self._utterance_ended,
            )
        except WorkerError as err:
            async with self._lock:
                await self._recover(link, str(err))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session receiver failed", extra={"session_id": self.session_id})
            await self._end_with_error(ErrorCode.INTERNAL, "internal error", "error")

    async def _queue_frame(self, utt: Utterance, frame: PcmFrame) -> None:
        await self._out.push(utt, frame)
        # Per frame, the common case is SPEAKING with audio queued: AUDIO_OWED changes
        # nothing there, so skip the scan of the pending utterances (it was 13% of the
        # orchestrator at 300 sessions). Any other case takes the full refresh.
        if self._machine.state is not SessionState.SPEAKING or not self._out.busy:
            self._refresh()

    def _utterance_ended(self) -> None:
        self._queue_ends()
        self._refresh()

    async def _end_with_error(self, code: ErrorCode, message: str, reason: str) -> None:
        """Let the audio already voiced play out, report the error, end the session."""
        await self._out.play_out()
        with contextlib.suppress(Exception):
            await self.send(Error(code, message))
        await self.close(reason)
