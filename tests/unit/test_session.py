"""The session core with small fakes for the router and the worker streams.

The fake worker mimics the real one's contract (same clause segmentation, text positions,
clause_end on a clause's last frame, UtteranceEnd, STOP ending every open utterance) and
voices one frame per non-space character, with that character written into the frame. So
the characters a client heard can be read back from the audio, and a test can check that
a failover loses nothing and repeats nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from duplex.audio.frames import PcmFrame, TextSpan
from duplex.orchestrator.config import OrchestratorConfig, SessionConfig
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import (
    AudioEnd,
    Control,
    ControlCommand,
    Error,
    ErrorCode,
    ServerMessage,
    SessionStart,
    TextChunk,
    WorkerFailover,
)
from duplex.orchestrator.session import (
    Session,
    SessionError,
    SessionServices,
    SessionState,
)
from duplex.orchestrator.transports.base import ClientChannel, TransportKind
from duplex.registry.records import Capabilities, WorkerMetrics, WorkerRecord
from duplex.routing import Decision, NoWorkerAvailable, NoWorkerCause, SessionRequest
from duplex.text import ClauseSegmenter
from duplex.workerclient import (
    StreamOpened,
    WorkerCommand,
    WorkerEvent,
    WorkerInfo,
    WorkerUnavailable,
    WorkerUtteranceEnd,
)

FRAME_BYTES = 1920  # 20 ms at 48 kHz


def frame_for(char: str) -> bytes:
    return char.encode("utf-32-le").ljust(FRAME_BYTES, b"\0")


def char_of(pcm: bytes) -> str:
    return pcm[:4].decode("utf-32-le")


class FakeStream:
    """One worker stream: text in, events out, as the real worker would send them."""

    def __init__(self, worker: FakeWorker) -> None:
        self.worker = worker
        self.opened = StreamOpened("sid", "tone-fast", 48000, 20)
        self.sent: list[tuple[str, bool]] = []
        self.events: asyncio.Queue[WorkerEvent | BaseException | None] = asyncio.Queue()
        self.closed = False
        self._utt: tuple[int, ClauseSegmenter, list[int]] | None = None  # index, seg, [len]
        self._next_utt = 0
        self._open: list[tuple[int, list[int]]] = []
        self.frames_emitted = 0

    async def send_text(self, text: str, is_final: bool) -> None:
        if self.worker.dead:
            raise WorkerUnavailable(self.worker.name, "connection refused")
        assert text or (is_final and self._utt is not None), "the worker refuses empty text"
        self.sent.append((text, is_final))
        if self._utt is None:
            self._utt = (self._next_utt, ClauseSegmenter(), [0])
            self._open.append((self._next_utt, self._utt[2]))
            self._next_utt += 1
        index, seg, length = self._utt
        length[0] += len(text)
        clauses = seg.push(text) if text else []
        if is_final:
            clauses += seg.finish()
        for clause in clauses:
            if self.worker.silent:
                continue
            chars = [c for c in clause.text if not c.isspace()]
            for i, char in enumerate(chars):
                if (
                    self.worker.fail_after is not None
                    and self.frames_emitted >= self.worker.fail_after
                ):
                    self.die()
                    return
                self.frames_emitted += 1
                span = TextSpan(index, clause.start, clause.end, i == len(chars) - 1)
                self.events.put_nowait(PcmFrame(frame_for(char), 48000, span))
        if is_final:
            self._utt = None
            self._open = [o for o in self._open if o[0] != index]
            if not self.worker.silent:
                self.events.put_nowait(WorkerUtteranceEnd(index, length[0], length[0], False, 0))

    def stop(self) -> None:
        for index, length in self._open:
            self.events.put_nowait(WorkerUtteranceEnd(index, length[0], 0, True, 0))
        self._open = []
        self._utt = None

    def die(self) -> None:
        self.worker.dead = True
        self.events.put_nowait(WorkerUnavailable(self.worker.name, "worker died"))

    async def next_event(self, timeout_s: float | None) -> WorkerEvent | None:
        async with asyncio.timeout(timeout_s):  # not wait_for: it can swallow a cancel (3.11)
            item = await self.events.get()
        if isinstance(item, BaseException):
            self.events.put_nowait(item)
            raise item
        return item

    async def close(self) -> None:
        self.closed = True


class FakeWorker:
    """One fake worker: its streams, the control commands it got, how it misbehaves."""

    def __init__(self, name: str, *, max_text_chars: int = 2000) -> None:
        self.name = name
        self.record = WorkerRecord(
            name=name,
            addr=f"grpc://{name}:1",
            adapter_type="tone",
            capabilities=Capabilities(languages=("en",)),
            resident_models=("tone-fast",),
            available_models=("tone-fast", "tone-rt02"),
            metrics=WorkerMetrics(),
            last_heartbeat=time.time(),
        )
        self.max_text_chars = max_text_chars
        self.streams: list[FakeStream] = []
        self.controls: list[WorkerCommand] = []
        self.dead = False
        self.silent = False  # accepts text, never answers (a hung worker)
        self.fail_after: int | None = None  # dies after this many frames
        self.refuse_open = False

    @property
    def stream(self) -> FakeStream:
        return self.streams[-1]

    def sent_text(self) -> str:
        return "".join(t for s in self.streams for t, _ in s.sent)

    async def open_stream(self, *args: Any, **kwargs: Any) -> FakeStream:
        if self.dead or self.refuse_open:
            raise WorkerUnavailable(self.name, "connection refused")
        self.streams.append(FakeStream(self))
        return self.stream

    async def control(self, session_id: str, command: WorkerCommand, timeout_s: float = 5.0) -> str:
        self.controls.append(command)
        if command is WorkerCommand.STOP:
            self.stream.stop()
        return "idle"

    async def info(self, timeout_s: float = 5.0) -> WorkerInfo:
        return WorkerInfo(self.name, "tone", True, False, ("en",), (), (), self.max_text_chars,
                          (48000,), 20, "cpu")  # fmt: skip

    async def load_model(self, model_id: str, timeout_s: float = 60.0) -> None:
        return None


class FakeClients:
    def __init__(self, workers: list[FakeWorker]) -> None:
        self.by_target = {w.record.target: w for w in workers}

    def get(self, target: str) -> FakeWorker:
        return self.by_target[target]


class FakeRouter:
    """Routes to the first worker in order that is not excluded."""

    def __init__(self, workers: list[FakeWorker]) -> None:
        self._workers = workers
        self.released: list[str] = []
        self.routed: list[str] = []

    def workers(self) -> dict[str, WorkerRecord]:
        return {w.name: w.record for w in self._workers}

    def route(self, request: SessionRequest, *, exclude: frozenset[str] = frozenset()) -> Decision:
        for w in self._workers:
            if w.name not in exclude:
                self.routed.append(w.name)
                return Decision(w.record, request.model_id, needs_load=False)
        raise NoWorkerAvailable(f"no worker left for {request.describe()}", NoWorkerCause.MODEL)

    def release(self, decision: Decision) -> None:
        self.released.append(decision.worker.name)


class FakeSink:
    def __init__(self) -> None:
        self.messages: list[ServerMessage] = []
        self.frames: list[bytes] = []
        self.spans: list[TextSpan | None] = []
        self.log: list[str] = []  # "f" for a frame, the message type otherwise
        self.changed = asyncio.Event()

    async def send_message(self, message: ServerMessage) -> None:
        self.messages.append(message)
        self.log.append(type(message).__name__)
        self.changed.set()

    async def send(self, frame: PcmFrame) -> None:
        assert len(frame.pcm) == FRAME_BYTES and frame.sample_rate == 48000
        self.frames.append(frame.pcm)
        self.spans.append(frame.span)
        self.log.append("f")
        self.changed.set()

    def clear(self) -> int:
        return 0

    def heard(self) -> str:
        return "".join(char_of(f) for f in self.frames)

    def audio_ends(self) -> list[int]:
        return [m.utterance for m in self.messages if isinstance(m, AudioEnd)]

    async def wait_for(self, predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
        async with asyncio.timeout(limit_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


class Harness:
    def __init__(self, workers: list[FakeWorker], **session: Any) -> None:
        session.setdefault("output_lead_ms", 60)
        config = replace(OrchestratorConfig(), session=replace(SessionConfig(), **session))
        self.workers = workers
        self.router = FakeRouter(workers)
        self.sink = FakeSink()
        self.metrics = OrchestratorMetrics()
        services = SessionServices(config, self.router, FakeClients(workers), self.metrics)  # type: ignore[arg-type]
        channel = ClientChannel(TransportKind.WEBSOCKET, self.sink, self.sink)
        self.session = Session("sid", channel, services)

    async def start(self, **fields: Any) -> Any:
        return await self.session.start(SessionStart(**{"model_id": "tone-fast", **fields}))

    async def text(self, text: str, final: bool = False) -> None:
        await self.session.on_text(TextChunk(text, final))

    async def control(self, command: ControlCommand) -> None:
        await self.session.on_control(Control(command))


def no_spaces(text: str) -> str:
    return "".join(c for c in text if not c.isspace())


@pytest.fixture
async def harness_factory() -> Any:
    made: list[Harness] = []

    def make(workers: list[FakeWorker], **session: Any) -> Harness:
        made.append(Harness(workers, **session))
        return made[-1]

    yield make
    for h in made:
        await h.session.close("test over")


SENTENCE = "Hello there, my friend. How are you today? I am fine, thank you."


async def test_start_routes_and_reports_the_worker_and_model(harness_factory: Any) -> None:
    """SessionStarted names the chosen worker and the model the worker opened."""
    h = harness_factory([FakeWorker("a"), FakeWorker("b")])
    started = await h.start()
    assert (started.worker, started.model_id, started.sample_rate) == ("a", "tone-fast", 48000)
    assert h.session.state is SessionState.LISTENING
    assert h.session.worker == "a"


async def test_a_final_chunk_is_spoken_then_audio_end(harness_factory: Any) -> None:
    """Every character is voiced once, then AudioEnd(0); the session is LISTENING again."""
    h = harness_factory([FakeWorker("a")])
    await h.start()
    await h.text(SENTENCE, final=True)
    states = [h.session.state]
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    states.append(h.session.state)
    assert h.sink.heard() == no_spaces(SENTENCE)
    assert h.sink.log[-1] == "AudioEnd"
    assert states == [SessionState.SPEAKING, SessionState.LISTENING]


async def test_the_first_clause_goes_to_the_worker_before_is_final(harness_factory: Any) -> None:
    """Word-by-word chunks: a complete clause is forwarded (not final) and spoken at once."""
    h = harness_factory([FakeWorker("a")])
    await h.start()
    for word in ["Hello ", "there, ", "my ", "friend"]:
        await h.text(word)
    sent = h.workers[0].stream.sent
    assert sent and not any(final for _, final in sent)
    assert "".join(t for t, _ in sent).startswith("Hello there, ")
    await h.sink.wait_for(lambda: h.sink.heard() == "Hellothere,")
    assert h.sink.audio_ends() == []
    await h.text(".", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    assert h.sink.heard() == "Hellothere,myfriend."
    assert "".join(t for t, _ in sent) == "Hello there, my friend."


async def test_text_without_a_clause_end_waits_for_more(harness_factory: Any) -> None:
    """Nothing is forwarded until a clause is complete (or the chunk is final)."""
    h = harness_factory([FakeWorker("a")])
    await h.start()
    await h.text("Hello there my")
    assert h.workers[0].stream.sent == []


async def test_several_utterances_get_audio_end_in_order(harness_factory: Any) -> None:
    """AudioEnd 0, 1, 2 each follow their utterance's last frame."""
    h = harness_factory([FakeWorker("a")], output_lead_ms=1000)
    await h.start()
    for text in ["One two three.", "Four five.", "Six."]:
        await h.text(text, final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0, 1, 2])
    assert h.sink.heard() == "Onetwothree.Fourfive.Six."
    ends = [i for i, entry in enumerate(h.sink.log) if entry == "AudioEnd"]
    assert ends == [12, 22, 27]


async def test_an_empty_utterance_ends_without_the_worker(harness_factory: Any) -> None:
    """A lone final empty chunk gets its AudioEnd; the worker never sees empty text."""
    h = harness_factory([FakeWorker("a")])
    await h.start()
    await h.text("", final=True)
    await h.text("Hi there.", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0, 1])
    assert h.workers[0].stream.sent == [("Hi there.", True)]


async def test_an_empty_final_chunk_closes_a_started_utterance(harness_factory: Any) -> None:
    """LLM style: words, then an empty final chunk; the worker gets the final marker."""
    h = harness_factory([FakeWorker("a")])
    await h.start()
    await h.text("Hello there, my ")
    await h.text("friend")
    await h.text("", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    assert h.sink.heard() == "Hellothere,myfriend"
    assert h.workers[0].stream.sent[-1][1] is True


async def test_text_over_the_limit_is_rejected_and_the_session_goes_on(
    harness_factory: Any,
) -> None:
    """TEXT_TOO_LONG is not fatal; the rejected chunk is not forwarded."""
    h = harness_factory([FakeWorker("a")], max_text_chars=20)
    await h.start()
    await h.text("Hello there, ")
    with pytest.raises(SessionError) as info:
        await h.text("this is far too long for the limit", final=True)
    assert info.value.code is ErrorCode.TEXT_TOO_LONG and not info.value.fatal
    await h.text("friend.", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    assert h.workers[0].sent_text() == "Hello there, friend."


async def test_the_limit_never_exceeds_the_workers_own(harness_factory: Any) -> None:
    """A worker that accepts fewer characters lowers the session's limit."""
    h = harness_factory([FakeWorker("a", max_text_chars=10)], max_text_chars=5000)
    await h.start()
    with pytest.raises(SessionError) as info:
        await h.text("Twelve chars", final=True)
    assert info.value.code is ErrorCode.TEXT_TOO_LONG


async def test_stop_drops_buffered_audio_and_ends_the_utterance_at_once(
    harness_factory: Any,
) -> None:
    """STOP: no more frames of that utterance, AudioEnd at once, then LISTENING."""
    h = harness_factory([FakeWorker("a")], output_lead_ms=20)
    await h.start()
    await h.text(SENTENCE, final=True)
    await h.sink.wait_for(lambda: len(h.sink.frames) >= 3)
    await h.control(ControlCommand.STOP)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0], limit_s=0.5)
    heard = len(h.sink.frames)
    assert heard < len(no_spaces(SENTENCE))
    assert h.workers[0].controls == ["STOP"]
    await asyncio.sleep(0.1)
    assert len(h.sink.frames) == heard
    assert h.session.state is SessionState.LISTENING
    # The next utterance is numbered 1 and maps to the worker's next utterance.
    await h.text("Again.", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0, 1])
    assert h.sink.heard().endswith("Again.")


async def test_stop_mid_utterance_closes_it_for_the_client(harness_factory: Any) -> None:
    """Text after a STOP starts a new utterance, as on the worker."""
    h = harness_factory([FakeWorker("a")])
    await h.start()
    await h.text("Hello there, my ")
    await h.control(ControlCommand.STOP)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    await h.text("New one.", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0, 1])
    assert h.sink.heard().endswith("Newone.")


async def test_pause_holds_frames_and_resume_continues(harness_factory: Any) -> None:
    """PAUSE: no frame until RESUME; both commands reach the worker; nothing is lost."""
    h = harness_factory([FakeWorker("a")], output_lead_ms=20)
    await h.start()
    await h.text(SENTENCE, final=True)
    await h.sink.wait_for(lambda: len(h.sink.frames) >= 3)
    await h.control(ControlCommand.PAUSE)
    assert h.session.state is SessionState.PAUSED
    held = len(h.sink.frames)
    await asyncio.sleep(0.15)
    assert len(h.sink.frames) == held
    await h.control(ControlCommand.RESUME)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    assert h.sink.heard() == no_spaces(SENTENCE)
    assert h.workers[0].controls == ["PAUSE", "RESUME"]


async def test_failover_mid_utterance_voices_every_character_once(harness_factory: Any) -> None:
    """Worker a dies mid-clause; b gets the text from the voiced position; none lost or doubled."""
    a, b = FakeWorker("a"), FakeWorker("b")
    a.fail_after = 25  # inside "How are you today?"
    h = harness_factory([a, b])
    await h.start()
    await h.text(SENTENCE, final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    assert h.sink.heard() == no_spaces(SENTENCE)
    # a's cut clause is resumed from the last word whose audio fully arrived, not its start.
    voiced_by_a = len("Hello there, my friend. How")
    assert b.stream.sent == [(SENTENCE[voiced_by_a:], True)]
    failovers = [m for m in h.sink.messages if isinstance(m, WorkerFailover)]
    assert failovers == [WorkerFailover("a", "b")]
    assert h.session.worker == "b"
    assert h.metrics.registry.get_sample_value("duplex_orch_failovers_total") == 1
    assert "a" in h.router.released


async def test_failover_resends_later_utterances_and_keeps_their_order(
    harness_factory: Any,
) -> None:
    """Utterances queued behind the failing one are resent too; AudioEnds stay in order."""
    a, b = FakeWorker("a"), FakeWorker("b")
    a.fail_after = 15  # two characters into "and then some."
    h = harness_factory([a, b])
    await h.start()
    await h.text("First one here, and then some.", final=True)
    await h.text("Second, ")
    await h.sink.wait_for(lambda: bool(b.streams))
    await h.text("and more.", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0, 1])
    assert h.sink.heard() == "Firstonehere,andthensome.Second,andmore."


async def test_failover_while_idle_moves_the_session(harness_factory: Any) -> None:
    """A worker lost between utterances: WorkerFailover, and the next utterance works."""
    a, b = FakeWorker("a"), FakeWorker("b")
    h = harness_factory([a, b])
    await h.start()
    a.stream.die()
    await h.sink.wait_for(lambda: any(isinstance(m, WorkerFailover) for m in h.sink.messages))
    await h.text("Still here.", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    assert b.sent_text() == "Still here."


async def test_a_send_failure_fails_over_before_the_text_is_lost(harness_factory: Any) -> None:
    """The worker is gone when text arrives: the text goes to the next worker."""
    a, b = FakeWorker("a"), FakeWorker("b")
    h = harness_factory([a, b])
    await h.start()
    a.dead = True
    await h.text("Nothing lost.", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    assert h.sink.heard() == "Nothinglost."


async def test_a_silent_worker_is_failed_after_the_frame_timeout(harness_factory: Any) -> None:
    """A worker that owes audio and sends nothing for frame_timeout_s is replaced."""
    a, b = FakeWorker("a"), FakeWorker("b")
    a.silent = True
    h = harness_factory([a, b], frame_timeout_s=0.3)
    await h.start()
    await h.text("Are you there?", final=True)
    await h.sink.wait_for(lambda: h.sink.audio_ends() == [0])
    assert h.sink.heard() == "Areyouthere?"
    assert [m for m in h.sink.messages if isinstance(m, WorkerFailover)]


async def test_a_quiet_worker_that_owes_nothing_is_not_failed(harness_factory: Any) -> None:
    """Silence while LISTENING or PAUSED is not a failure."""
    a = FakeWorker("a")
    h = harness_factory([a, FakeWorker("b")], frame_timeout_s=0.2)
    await h.start()
    await h.text("Hello there, ")
    a.silent = True
    await h.control(ControlCommand.PAUSE)
    await h.text("more text.", final=True)
    await asyncio.sleep(0.6)
    assert h.session.worker == "a"
    assert not [m for m in h.sink.messages if isinstance(m, WorkerFailover)]


async def test_no_worker_left_reports_the_unspoken_text_and_ends(harness_factory: Any) -> None:
    """Error WORKER_FAILED counts the characters not voiced; the session closes itself."""
    a = FakeWorker("a")
    a.fail_after = 10  # "Hellothere," is voiced (11 chars) only partly: clause not finished
    h = harness_factory([a])
    await h.start()
    await h.text(SENTENCE, final=True)
    reason = await asyncio.wait_for(h.session.wait_closed(), 5)
    assert reason == "worker_failed"
    errors = [m for m in h.sink.messages if isinstance(m, Error)]
    assert len(errors) == 1 and errors[0].code is ErrorCode.WORKER_FAILED
    assert f"{len(SENTENCE)} characters" in errors[0].message
    assert h.session.state is SessionState.CLOSED


async def test_failovers_stop_after_max_failovers(harness_factory: Any) -> None:
    """Each replacement dies too: after max_failovers the session ends with WORKER_FAILED."""
    workers = [FakeWorker(n) for n in "abc"]
    for w in workers:
        w.fail_after = 3
    h = harness_factory(workers, max_failovers=1)
    await h.start()
    await h.text(SENTENCE, final=True)
    assert await asyncio.wait_for(h.session.wait_closed(), 5) == "worker_failed"
    assert not workers[2].streams
    errors = [m for m in h.sink.messages if isinstance(m, Error)]
    assert errors and "no failovers left" in errors[0].message


async def test_unknown_model_names_the_known_ones(harness_factory: Any) -> None:
    """UNKNOWN_MODEL lists every model the live workers offer."""
    h = harness_factory([FakeWorker("a")])
    with pytest.raises(SessionError) as info:
        await h.start(model_id="nope")
    assert info.value.code is ErrorCode.UNKNOWN_MODEL and info.value.fatal
    assert "tone-fast" in info.value.message and "tone-rt02" in info.value.message


async def test_no_worker_available_says_what_was_asked(harness_factory: Any) -> None:
    """Routing finds nothing: NO_WORKER_AVAILABLE with routing's reason."""
    h = harness_factory([])
    with pytest.raises(SessionError) as info:
        await h.start()
    assert info.value.code is ErrorCode.NO_WORKER_AVAILABLE and info.value.fatal


async def test_start_tries_the_next_worker_when_one_cannot_open(harness_factory: Any) -> None:
    """A worker that refuses the stream is skipped and its routing count released."""
    a, b = FakeWorker("a"), FakeWorker("b")
    a.refuse_open = True
    h = harness_factory([a, b])
    started = await h.start()
    assert started.worker == "b"
    assert h.router.released == ["a"]


async def test_close_is_idempotent_and_releases_everything(harness_factory: Any) -> None:
    """close(): stream closed, routing count released, wait_closed answers, no task left."""
    a = FakeWorker("a")
    h = harness_factory([a])
    await h.start()
    await h.session.close("client_end")
    await h.session.close("again")
    assert a.stream.closed
    assert h.router.released == ["a"]
    assert await h.session.wait_closed() == "client_end"
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().endswith(":sid")]
    assert leftovers == []


async def test_an_unfinished_utterance_with_nothing_to_play_is_listening(
    harness_factory: Any,
) -> None:
    """Half a sentence and silence: LISTENING once its audio has played (idle timeout works)."""
    h = harness_factory([FakeWorker("a")])
    await h.start()
    await h.text("Hello there, my")
    await h.sink.wait_for(lambda: h.sink.heard() == "Hellothere,")
    await asyncio.sleep(0.05)
    assert h.session.state is SessionState.LISTENING


async def test_text_before_start_is_refused(harness_factory: Any) -> None:
    """NOT_STARTED, not fatal."""
    h = harness_factory([FakeWorker("a")])
    with pytest.raises(SessionError) as info:
        await h.text("hi", final=True)
    assert info.value.code is ErrorCode.NOT_STARTED and not info.value.fatal
