"""The client side of the worker ABI (gRPC `tts.v1.TTSWorker`).

The only client-side module that imports ``duplex.gen``: everything it hands out is a
frozen dataclass of this module, and every gRPC status is translated into a
:class:`WorkerError` subclass here. Every call carries a deadline (``asyncio.timeout``,
never ``wait_for``, which on Python 3.11 can swallow a cancellation); the synthesis
stream itself has none (a session lives for minutes), so its reads go through an
owned pump task and a queue, and callers wait on that queue with their own timeout
(cancelling a grpc.aio ``read()`` would cancel the whole RPC).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import grpc
import grpc.aio

from duplex.audio.frames import PcmFrame, TextSpan
from duplex.gen.tts.v1 import tts_pb2, tts_pb2_grpc
from duplex.workerclient.credentials import WorkerSecurity

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 5.0
# Responses read ahead of the session; beyond this the pump stops reading and gRPC flow
# control holds the worker back.
_EVENT_QUEUE: Final = 64
# Frames per response the client asks for: a gRPC message per 20 ms frame costs both ends
# more than the audio itself at hundreds of sessions. The worker then runs this many frames
# minus one beyond the stream's lead, never fewer than the lead ahead.
FRAMES_PER_MESSAGE: Final = 5


class WorkerCommand(StrEnum):
    """What `Control` asks of one session on a worker."""

    PAUSE = "PAUSE"
    RESUME = "RESUME"
    STOP = "STOP"


_COMMANDS: Final = {
    WorkerCommand.PAUSE: tts_pb2.PAUSE,
    WorkerCommand.RESUME: tts_pb2.RESUME,
    WorkerCommand.STOP: tts_pb2.STOP,
}


class WorkerError(Exception):
    """A call to a worker failed; ``target`` names the worker's address."""

    def __init__(self, target: str, message: str) -> None:
        super().__init__(f"{target}: {message}")
        self.target = target
        self.message = message


class WorkerUnavailable(WorkerError):
    """The worker cannot be reached, or did not answer within the deadline."""


class UnknownModelError(WorkerError):
    """The worker does not know the requested model (NOT_FOUND)."""


class UnknownSessionError(WorkerError):
    """A Control named a session the worker does not have (NOT_FOUND)."""


class WorkerCapacityError(WorkerError):
    """The worker refused for lack of capacity (RESOURCE_EXHAUSTED)."""


class WorkerStreamError(WorkerError):
    """Any other failure of a call or of an open synthesis stream."""


@dataclass(frozen=True)
class WorkerUtteranceEnd:
    """The worker finished (or stopped) one of its utterances."""

    utterance: int
    text_length: int
    voiced_length: int
    stopped: bool
    frames: int


# A frame's span is in the worker's numbering: its utterance on this stream, and the bounds
# of the clause it voices within the text that stream was given.
WorkerEvent = PcmFrame | WorkerUtteranceEnd


@dataclass(frozen=True)
class StreamOpened:
    """The worker's answer to SessionOpen."""

    session_id: str
    model_id: str
    sample_rate: int
    frame_duration_ms: int


@dataclass(frozen=True)
class WorkerModel:
    """One catalog entry of a worker (ListModels / LoadModel)."""

    model_id: str
    family: str
    languages: tuple[str, ...]
    capabilities: tuple[str, ...]
    resident: bool
    native_sample_rate: int
    description: str
    active_sessions: int


@dataclass(frozen=True)
class WorkerModels:
    models: tuple[WorkerModel, ...]
    default_model_id: str


@dataclass(frozen=True)
class LoadResult:
    model: WorkerModel
    loaded_now: bool
    load_ms: float


@dataclass(frozen=True)
class WorkerInfo:
    """GetCapabilities: what the worker is and can do."""

    worker_name: str
    adapter_type: str
    streaming: bool
    zero_shot: bool
    languages: tuple[str, ...]
    resident_models: tuple[str, ...]
    available_models: tuple[str, ...]
    max_text_chars: int
    sample_rates: tuple[int, ...]
    frame_duration_ms: int
    device: str


def _translate(
    target: str, err: grpc.aio.AioRpcError, not_found: type[WorkerError] = UnknownModelError
) -> WorkerError:
    code = err.code()
    message = f"{code.name}: {err.details() or ''}".rstrip(": ")
    if code == grpc.StatusCode.NOT_FOUND:
        return not_found(target, message)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return WorkerUnavailable(target, message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return WorkerCapacityError(target, message)
    return WorkerStreamError(target, message)


def _frame(f: Any, target: str, sequence: int) -> PcmFrame:
    if f.sequence != sequence:
        # A lost or repeated frame would shift every text position after it.
        raise WorkerStreamError(target, f"frame {f.sequence} where {sequence} was due")
    try:
        return PcmFrame(
            f.pcm, f.sample_rate, TextSpan(f.utterance, f.text_start, f.text_end, f.clause_end)
        )
    except ValueError as exc:
        raise WorkerStreamError(target, f"malformed frame: {exc}") from None


def _events(msg: Any, target: str, sequence: int) -> list[WorkerEvent]:
    """One stream response as typed events; ``sequence`` is the frame number expected next."""
    kind = msg.WhichOneof("kind")
    if kind == "frames":
        return [_frame(f, target, sequence + i) for i, f in enumerate(msg.frames.frames)]
    if kind == "frame":
        return [_frame(msg.frame, target, sequence)]
    if kind == "utterance_end":
        e = msg.utterance_end
        return [
            WorkerUtteranceEnd(
                utterance=int(e.utterance),
                text_length=int(e.text_length),
                voiced_length=int(e.voiced_length),
                stopped=bool(e.stopped),
                frames=int(e.frames),
            )
        ]
    raise WorkerStreamError(target, f"unexpected response {kind!r} on an open stream")


def _model(m: Any) -> WorkerModel:
    return WorkerModel(
        model_id=m.model_id,
        family=m.family,
        languages=tuple(m.languages),
        capabilities=tuple(m.capabilities),
        resident=bool(m.resident),
        native_sample_rate=int(m.native_sample_rate),
        description=m.description,
        active_sessions=int(m.active_sessions),
    )


class _End:
    """Queue sentinel: the stream ended, cleanly (error None) or not."""

    def __init__(self, error: WorkerError | None) -> None:
        self.error = error


class WorkerStream:
    """One open ``Synthesize`` stream: send text, read typed events, close."""

    def __init__(self, target: str, call: Any, write_timeout_s: float) -> None:
        self.target = target
        self._call = call
        self._write_timeout_s = write_timeout_s
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_EVENT_QUEUE)
        self._opened: asyncio.Future[StreamOpened] = asyncio.get_running_loop().create_future()
        self._pump = asyncio.create_task(self._read_loop(), name=f"worker-stream:{target}")
        self._ended: _End | None = None
        self._pending: collections.deque[WorkerEvent] = collections.deque()  # of one response
        self._closed = False

    async def _read_loop(self) -> None:
        end = _End(None)
        sequence = 0
        try:
            while True:
                msg = await self._call.read()
                if msg is grpc.aio.EOF:
                    if not self._opened.done():
                        end = _End(WorkerStreamError(self.target, "stream ended before opened"))
                    break
                if not self._opened.done():
                    if msg.WhichOneof("kind") != "opened":
                        end = _End(WorkerStreamError(self.target, "first response not opened"))
                        break
                    o = msg.opened
                    self._opened.set_result(
                        StreamOpened(
                            o.session_id, o.model_id, int(o.sample_rate), int(o.frame_duration_ms)
                        )
                    )
                    continue
                events = _events(msg, self.target, sequence)
                if events and isinstance(events[0], PcmFrame):
                    sequence += len(events)
                if events:
                    await self._queue.put(events)
        except grpc.aio.AioRpcError as err:
            end = _End(_translate(self.target, err))
        except WorkerError as err:
            end = _End(err)
        except asyncio.CancelledError:
            end = _End(WorkerStreamError(self.target, "stream closed"))
            raise
        finally:
            if not self._opened.done() and end.error is not None:
                self._opened.set_exception(end.error)
            # Never blocks for long: the pump is the only producer, and a full queue means
            # the reader has stopped caring; drop the oldest to make room for the end.
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(end)

    async def wait_opened(self, timeout_s: float) -> StreamOpened:
        """The SessionOpened answer, within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(self._opened)
        except TimeoutError:
            raise WorkerUnavailable(self.target, f"no SessionOpened within {timeout_s}s") from None

    @property
    def opened(self) -> StreamOpened:
        """The SessionOpened answer (``open_stream`` returns only once it has come)."""
        return self._opened.result()

    async def send_text(self, text: str, is_final: bool) -> None:
        """Send one TextChunk; raises a :class:`WorkerError` if the stream is broken."""
        if self._closed or self._call.done():
            raise WorkerStreamError(self.target, "stream is closed")
        req = tts_pb2.SynthesizeRequest(text=tts_pb2.TextChunk(text=text, is_final=is_final))
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._call.write(req)
        except grpc.aio.AioRpcError as err:
            raise _translate(self.target, err) from None
        except TimeoutError:
            raise WorkerUnavailable(self.target, "write timed out") from None
        except asyncio.InvalidStateError:
            raise WorkerStreamError(self.target, "stream already finished") from None

    async def next_event(self, timeout_s: float | None) -> WorkerEvent | None:
        """The next event, None once the stream has ended cleanly.

        Raises :class:`TimeoutError` when nothing arrives within ``timeout_s`` (the stream
        stays usable) and :class:`WorkerError` when the stream failed.
        """
        if self._pending:
            return self._pending.popleft()
        if self._ended is None:
            if self._queue.empty():
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives
                # as the item does, so Session.close() would wait forever for its receiver task.
                async with asyncio.timeout(timeout_s):
                    item = await self._queue.get()
            else:
                item = self._queue.get_nowait()  # no timer for what is already here
            if not isinstance(item, _End):
                self._pending.extend(item)
                return self._pending.popleft()
            self._ended = item
        if self._ended.error is not None:
            raise self._ended.error
        return None

    async def events(self) -> AsyncIterator[WorkerEvent]:
        """Every event until the stream ends; raises :class:`WorkerError` if it fails."""
        while (event := await self.next_event(None)) is not None:
            yield event

    async def close(self) -> None:
        """Cancel the RPC (the worker ends the session) and the pump. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._call.cancel()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        if not self._opened.done():
            self._opened.cancel()


class WorkerClient:
    """Calls to one worker over one grpc.aio channel (insecure: loopback / private network)."""

    def __init__(self, target: str, security: WorkerSecurity | None = None) -> None:
        self.target = target.removeprefix("grpc://")
        # A token and/or mutual TLS across hosts (duplex.workerclient.credentials).
        self._channel = (
            security.channel(self.target)
            if security is not None
            else grpc.aio.insecure_channel(self.target)
        )
        self._stub = tts_pb2_grpc.TTSWorkerStub(self._channel)
        self._info: WorkerInfo | None = None

    async def open_stream(
        self,
        session_id: str,
        model_id: str | None,
        sample_rate: int,
        language: str,
        lead_ms: int | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        frames_per_message: int = FRAMES_PER_MESSAGE,
        reference: PcmFrame | None = None,
        speed: float | None = None,
    ) -> WorkerStream:
        """Open a synthesis session; waits for SessionOpened at most ``timeout_s`` seconds.

        ``reference``: the client's reference audio (mono s16le), for a zero-shot voice.
        ``speed``: a speaking rate (0.25-4.0) for a model with the ``speed`` capability;
        None: the model's own.
        The answer is on the returned stream's ``opened``.
        """
        call = self._stub.Synthesize()
        stream = WorkerStream(self.target, call, write_timeout_s=timeout_s)
        session_open = tts_pb2.SessionOpen(
            session_id=session_id,
            model_id=model_id or "",
            sample_rate=sample_rate,
            language=language,
        )
        if lead_ms is not None:
            session_open.lead_ms = lead_ms
        session_open.max_frames_per_message = frames_per_message
        if reference is not None:
            session_open.reference_audio.pcm = reference.pcm
            session_open.reference_audio.sample_rate = reference.sample_rate
        if speed is not None:
            session_open.speed = speed
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await call.write(tts_pb2.SynthesizeRequest(open=session_open))
            except grpc.aio.AioRpcError as err:
                raise _translate(self.target, err) from None
            except TimeoutError:
                raise WorkerUnavailable(self.target, f"open not sent within {timeout_s}s") from None
            except asyncio.InvalidStateError:
                # The RPC already failed; the pump holds its status.
                pass
            await stream.wait_opened(timeout_s)
        except BaseException:
            await stream.close()
            raise
        return stream

    async def control(
        self, session_id: str, command: WorkerCommand, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> str:
        """PAUSE / RESUME / STOP one session; returns the worker's state after it."""
        req = tts_pb2.ControlRequest(session_id=session_id, command=_COMMANDS[command])
        try:
            resp = await self._stub.Control(req, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _translate(self.target, err, not_found=UnknownSessionError) from None
        return str(resp.state)

    async def list_models(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> WorkerModels:
        """The worker's whole catalog."""
        try:
            resp = await self._stub.ListModels(tts_pb2.ListModelsRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _translate(self.target, err) from None
        return WorkerModels(tuple(_model(m) for m in resp.models), resp.default_model_id)

    async def load_model(self, model_id: str, timeout_s: float = 60.0) -> LoadResult:
        """Make a catalog model resident (loading can take seconds: a longer default)."""
        try:
            resp = await self._stub.LoadModel(
                tts_pb2.LoadModelRequest(model_id=model_id), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as err:
            raise _translate(self.target, err) from None
        return LoadResult(_model(resp.model), bool(resp.loaded_now), float(resp.load_ms))

    async def unload_model(self, model_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
        """Release a resident model; returns its id. UnknownModelError when not in the
        catalog; WorkerStreamError (FAILED_PRECONDITION) while sessions still use it."""
        try:
            resp = await self._stub.UnloadModel(
                tts_pb2.UnloadModelRequest(model_id=model_id), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as err:
            raise _translate(self.target, err) from None
        return str(resp.model_id)

    async def capabilities(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> WorkerInfo:
        """GetCapabilities."""
        try:
            r = await self._stub.GetCapabilities(
                tts_pb2.GetCapabilitiesRequest(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as err:
            raise _translate(self.target, err) from None
        return WorkerInfo(
            worker_name=r.worker_name,
            adapter_type=r.adapter_type,
            streaming=bool(r.streaming),
            zero_shot=bool(r.zero_shot),
            languages=tuple(r.languages),
            resident_models=tuple(r.resident_models),
            available_models=tuple(r.available_models),
            max_text_chars=int(r.max_text_chars),
            sample_rates=tuple(int(x) for x in r.sample_rates),
            frame_duration_ms=int(r.frame_duration_ms),
            device=r.device,
        )

    async def info(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> WorkerInfo:
        """`capabilities()`, asked once per client: the limits it reports do not change."""
        if self._info is None:
            self._info = await self.capabilities(timeout_s)
        return self._info

    async def close(self) -> None:
        await self._channel.close(grace=None)


class WorkerClients:
    """One :class:`WorkerClient` per worker address, created on first use."""

    def __init__(self, security: WorkerSecurity | None = None) -> None:
        self._clients: dict[str, WorkerClient] = {}
        self._security = security

    def get(self, target: str) -> WorkerClient:
        key = target.removeprefix("grpc://")
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = WorkerClient(key, self._security)
        return client

    async def retain(self, targets: Iterable[str]) -> None:
        """Close the channels of workers that are no longer in ``targets``."""
        keep = {t.removeprefix("grpc://") for t in targets}
        for key in [k for k in self._clients if k not in keep]:
            await self._clients.pop(key).close()

    async def close_all(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
