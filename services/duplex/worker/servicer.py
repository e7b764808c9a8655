"""The gRPC face of the worker: requests become session and model-manager calls, and domain
errors become status codes here and nowhere else. The only worker module that imports
the generated code."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from duplex.gen.tts.v1 import tts_pb2, tts_pb2_grpc
from duplex.worker.adapters.base import MAX_SPEED, MIN_SPEED, SpeedVoice, Voice
from duplex.worker.adapters.zero_shot import ReferenceAudio, ReferenceAudioError, ZeroShotVoice
from duplex.worker.batching import FrameBatcher, session_lead_ms
from duplex.worker.catalog import Catalog, ModelSpec, UnknownModel
from duplex.worker.config import SUPPORTED_SAMPLE_RATES, WorkerConfig
from duplex.worker.metrics import WorkerPromMetrics
from duplex.worker.model_manager import (
    CapacityExhausted,
    Lease,
    ModelBusy,
    ModelLoadFailed,
    ModelManager,
)
from duplex.worker.session import Scheduler, Session
from duplex.worker.session_messages import (
    FrameEvent,
    InvalidText,
    SessionEvent,
    SessionSettings,
    SessionState,
    SynthesisFailed,
)

_LOG = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
"""A stream must send its SessionOpen within this time."""

READER_STOP_S = 2.0

MAX_FRAMES_PER_MESSAGE = 25
"""At most 500 ms of 20 ms frames per response, whatever a client asks."""

_CONTROL = {tts_pb2.PAUSE: "pause", tts_pb2.RESUME: "resume", tts_pb2.STOP: "stop"}


class _NotZeroShot(Exception):
    """reference_audio sent to a model that cannot clone a voice."""


class BadRequest(ValueError):
    """A message out of protocol order (a second open, an empty request)."""


@dataclass(frozen=True)
class WorkerIdentity:
    """What GetCapabilities reports about this process."""

    name: str
    adapter_type: str
    device: str


class TTSWorkerServicer(tts_pb2_grpc.TTSWorkerServicer):  # type: ignore[misc]
    """Serves Synthesize, Control and the model RPCs for one worker process."""

    def __init__(
        self,
        *,
        config: WorkerConfig,
        identity: WorkerIdentity,
        catalog: Catalog,
        models: ModelManager,
        scheduler: Scheduler,
        metrics: WorkerPromMetrics | None = None,
    ) -> None:
        self._config = config
        self._identity = identity
        self._catalog = catalog
        self._models = models
        self._scheduler = scheduler
        self._sessions: dict[str, Session] = {}
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self._draining = False
        self._closed_underruns = 0
        self._metrics = metrics

    # -- what the app reads ---------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    def active_sessions(self) -> int:
        return len(self._sessions)

    def underruns(self) -> int:
        """Under-runs counted since start, over every session."""
        return self._closed_underruns + sum(s.underruns for s in self._sessions.values())

    def start_drain(self) -> None:
        """Refuse new sessions; live ones end once they have nothing left to say."""
        self._draining = True
        for session in self._sessions.values():
            session.drain()

    async def wait_sessions_done(self, limit_s: float) -> bool:
        """Wait up to `limit_s` for every session to end; True if none is left."""
        try:
            async with asyncio.timeout(limit_s):
                await self._no_sessions.wait()
        except TimeoutError:
            return False
        return True

    # -- Synthesize -----------------------------------------------------------------

    async def Synthesize(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        # Read before refusing: a client still writing its open would see a transport
        # error instead of the status.
        opening = await self._read_open(request_iterator, context)
        if self._draining:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "worker is draining")
        session_id = opening.session_id or uuid.uuid4().hex
        if session_id in self._sessions:
            await _abort(
                context, grpc.StatusCode.ALREADY_EXISTS, f"session {session_id!r} already exists"
            )
        settings = self._settings(opening)
        if settings.sample_rate not in SUPPORTED_SAMPLE_RATES:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"sample_rate {settings.sample_rate} not supported; "
                f"use one of {list(SUPPORTED_SAMPLE_RATES)}",
            )
        if opening.HasField("speed") and not MIN_SPEED <= opening.speed <= MAX_SPEED:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"speed {opening.speed:g} is outside {MIN_SPEED:g}..{MAX_SPEED:g}",
            )
        lease = await self._acquire(opening.model_id or None, context)
        voice = await self._at_speed(
            opening, lease, await self._session_voice(opening, lease, context), context
        )
        session = Session(session_id, voice, self._scheduler, settings, metrics=self._metrics)
        self._register(session)
        reader = asyncio.create_task(
            self._read_text(request_iterator, session), name=f"session-reader:{session_id}"
        )
        _LOG.info(
            "session opened",
            extra={
                "session_id": session_id,
                "worker": self._identity.name,
                "model_id": lease.model_id,
                "sample_rate": settings.sample_rate,
                "lead_ms": settings.lead_ms,
            },
        )
        try:
            yield tts_pb2.SynthesizeResponse(
                opened=tts_pb2.SessionOpened(
                    session_id=session_id,
                    model_id=lease.model_id,
                    sample_rate=settings.sample_rate,
                    frame_duration_ms=settings.frame_ms,
                )
            )
            try:
                async for response in self._responses(session, opening):
                    yield response
            except (InvalidText, BadRequest) as exc:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except SynthesisFailed as exc:
                await _abort(context, grpc.StatusCode.INTERNAL, str(exc))
            if session.finished_by_drain:
                await _abort(
                    context, grpc.StatusCode.UNAVAILABLE, "worker is draining: session ended"
                )
        finally:
            self._unregister(session, lease)
            await _stop_reader(reader)

    async def _responses(self, session: Session, opening: Any) -> AsyncIterator[Any]:
        """The session's events as responses: one frame each, or batches when asked."""
        max_frames = min(int(opening.max_frames_per_message), MAX_FRAMES_PER_MESSAGE)
        if max_frames <= 1:
            async for item in session.batches(1):
                if isinstance(item, list):
                    for event in item:
                        yield _frame_response(event)
                else:
                    yield _response(item)
            return
        batcher = FrameBatcher(
            session.batches(max_frames),
            max_frames=max_frames,
            lead_s=self._client_lead_ms(opening) / 1000,
            frame_s=session.settings.frame_ms / 1000,
        )
        async for batch in batcher.batches():
            if isinstance(batch, list):
                yield _frames_response(batch)
            else:
                yield _response(batch)

    def _client_lead_ms(self, opening: Any) -> int:
        if opening.HasField("lead_ms"):
            return int(opening.lead_ms)
        return self._config.worker.output_lead_ms

    async def _read_open(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> Any:
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                first = await anext(aiter(requests), None)
        except TimeoutError:
            await _abort(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no SessionOpen within {OPEN_TIMEOUT_S:.0f} s",
            )
        if first is None or first.WhichOneof("kind") != "open":
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first SynthesizeRequest must be `open` (SessionOpen)",
            )
        return first.open

    def _settings(self, opening: Any) -> SessionSettings:
        worker = self._config.worker
        # Frames go out in messages of up to this many: the session's playback clock releases
        # them in groups of it too (one wake-up per message instead of per frame).
        group = min(max(1, opening.max_frames_per_message), MAX_FRAMES_PER_MESSAGE)
        return SessionSettings(
            sample_rate=opening.sample_rate or self._config.audio.sample_rate,
            frame_ms=self._config.audio.frame_duration_ms,
            lead_ms=session_lead_ms(
                self._client_lead_ms(opening), group, self._config.audio.frame_duration_ms
            ),
            release_frames=group,
            max_text_chars=worker.max_text_chars,
            first_clause_max_chars=worker.first_clause_max_chars,
            max_jobs_in_flight=worker.session_jobs_in_flight,
        )

    async def _acquire(self, model_id: str | None, context: grpc.aio.ServicerContext) -> Lease:
        try:
            return await self._models.acquire(model_id)
        except UnknownModel as exc:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except CapacityExhausted as exc:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except ModelLoadFailed as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))

    async def _session_voice(
        self, opening: Any, lease: Lease, context: grpc.aio.ServicerContext
    ) -> Voice:
        """The lease's voice, or a per-session one conditioned on the reference audio."""
        if not opening.HasField("reference_audio"):
            return lease.voice
        voice = lease.voice
        try:
            if not isinstance(voice, ZeroShotVoice):
                raise _NotZeroShot(f"model {lease.model_id!r} has no zero_shot capability")
            reference = ReferenceAudio(
                opening.reference_audio.pcm, opening.reference_audio.sample_rate
            )
            return await asyncio.to_thread(
                voice.session_voice, reference=reference, language=opening.language or None
            )
        except _NotZeroShot as exc:
            lease.release()
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ReferenceAudioError as exc:
            lease.release()
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BaseException:
            lease.release()
            raise

    async def _at_speed(
        self, opening: Any, lease: Lease, voice: Voice, context: grpc.aio.ServicerContext
    ) -> Voice:
        """``voice`` at the session's speaking rate, when it asks for another than 1.0."""
        if not opening.HasField("speed") or opening.speed == 1.0:
            return voice
        if not isinstance(voice, SpeedVoice):
            lease.release()
            await _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {lease.model_id!r} has no speed capability: it speaks at its own rate",
            )
        return voice.at_speed(float(opening.speed))

    async def _read_text(self, requests: AsyncIterator[Any], session: Session) -> None:
        """Feed text chunks to the session; input errors end the stream through it."""
        try:
            async for request in requests:
                if request.WhichOneof("kind") != "text":
                    raise BadRequest("only `text` chunks may follow `open`")
                session.push_text(request.text.text, request.text.is_final)
            session.end_input()
        except (InvalidText, BadRequest) as exc:
            session.fail(exc)
        except (grpc.RpcError, grpc.aio.AioRpcError) as exc:
            # The client went away; the RPC is being cancelled and cleans up.
            _LOG.info(
                "session input ended",
                extra={
                    "session_id": session.session_id,
                    "worker": self._identity.name,
                    "error": str(exc),
                },
            )

    def _register(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        self._no_sessions.clear()
        if self._metrics is not None:
            self._metrics.session_opened()
        if self._draining:
            session.drain()

    def _unregister(self, session: Session, lease: Lease) -> None:
        session.close()
        lease.release()
        if self._sessions.pop(session.session_id, None) is session:
            self._closed_underruns += session.underruns
            if self._metrics is not None:
                self._metrics.session_closed()
        if not self._sessions:
            self._no_sessions.set()
        _LOG.info(
            "session closed",
            extra={
                "session_id": session.session_id,
                "worker": self._identity.name,
                "model_id": lease.model_id,
                "underruns": session.underruns,
            },
        )

    # -- unary RPCs -------------------------------------------------------------------

    async def Control(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        action = _CONTROL.get(request.command)
        if action is None:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "command must be PAUSE, RESUME or STOP (CONTROL_COMMAND_UNSPECIFIED is invalid)",
            )
        session = self._sessions.get(request.session_id)
        if session is None:
            await _abort(
                context, grpc.StatusCode.NOT_FOUND, f"no session {request.session_id!r} here"
            )
        state: SessionState = getattr(session, action)()
        return tts_pb2.ControlResponse(session_id=request.session_id, state=state.value)

    async def ListModels(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return tts_pb2.ListModelsResponse(
            models=[self._model_info(spec) for spec in self._catalog.all()],
            default_model_id=self._models.default_model_id,
        )

    async def LoadModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = await self._known(request.model_id, context)
        try:
            result = await self._models.load(spec.model_id)
        except CapacityExhausted as exc:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except ModelLoadFailed as exc:
            await _abort(context, grpc.StatusCode.INTERNAL, str(exc))
        return tts_pb2.LoadModelResponse(
            model=self._model_info(spec), loaded_now=result.loaded_now, load_ms=result.load_ms
        )

    async def UnloadModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = await self._known(request.model_id, context)
        try:
            await self._models.unload(spec.model_id)
        except ModelBusy as exc:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return tts_pb2.UnloadModelResponse(model_id=spec.model_id)

    async def GetCapabilities(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        specs = self._catalog.all()
        return tts_pb2.GetCapabilitiesResponse(
            worker_name=self._identity.name,
            adapter_type=self._identity.adapter_type,
            streaming=any("streaming" in s.capabilities for s in specs),
            zero_shot=any("zero_shot" in s.capabilities for s in specs),
            languages=list(self._catalog.languages()),
            resident_models=list(self._models.resident()),
            available_models=list(self._catalog.ids()),
            max_text_chars=self._config.worker.max_text_chars,
            sample_rates=list(SUPPORTED_SAMPLE_RATES),
            frame_duration_ms=self._config.audio.frame_duration_ms,
            device=self._identity.device,
        )

    async def _known(self, model_id: str, context: grpc.aio.ServicerContext) -> ModelSpec:
        if not model_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "model_id must not be empty")
        try:
            return self._catalog.get(model_id)
        except UnknownModel as exc:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))

    def _model_info(self, spec: ModelSpec) -> Any:
        return tts_pb2.ModelInfo(
            model_id=spec.model_id,
            family=spec.family,
            languages=list(spec.languages),
            capabilities=list(spec.capabilities),
            resident=self._models.is_loaded(spec.model_id),
            native_sample_rate=spec.native_sample_rate,
            description=spec.description,
            active_sessions=self._models.refcount(spec.model_id),
        )


async def _stop_reader(reader: asyncio.Task[None]) -> None:
    # asyncio.wait, not `await reader`: an RPC that ended with an abort does not always
    # deliver the reader's cancellation to an awaiting generator.
    reader.cancel()
    done, _ = await asyncio.wait([reader], timeout=READER_STOP_S)
    if not done:
        _LOG.warning(
            "session reader still running after its stop deadline",
            extra={"task": reader.get_name(), "deadline_s": READER_STOP_S},
        )


def add_to_server(servicer: TTSWorkerServicer, server: grpc.aio.Server) -> None:
    """Register the TTSWorker service on `server`, with server reflection so that generic
    tools (`grpcurl -plaintext localhost:7001 grpc.health.v1.Health/Check`) work without
    the .proto files."""
    tts_pb2_grpc.add_TTSWorkerServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        (
            tts_pb2.DESCRIPTOR.services_by_name["TTSWorker"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )


def _fill(frame: Any, event: FrameEvent) -> None:
    # Fields set on a message built in place: a constructor's keywords, and a submessage
    # passed to its parent's constructor (copied, pcm included), cost twice as much.
    frame.pcm = event.pcm
    frame.sample_rate = event.sample_rate
    frame.sequence = event.sequence
    frame.utterance = event.utterance
    frame.text_start = event.text_start
    frame.text_end = event.text_end
    frame.clause_end = event.clause_end


def _frame_response(event: FrameEvent) -> Any:
    response = tts_pb2.SynthesizeResponse()
    _fill(response.frame, event)
    return response


def _frames_response(events: list[FrameEvent]) -> Any:
    response = tts_pb2.SynthesizeResponse()
    add = response.frames.frames.add
    for event in events:
        _fill(add(), event)
    return response


def _response(event: SessionEvent) -> Any:
    if isinstance(event, FrameEvent):
        return _frame_response(event)
    return tts_pb2.SynthesizeResponse(
        utterance_end=tts_pb2.UtteranceEnd(
            utterance=event.utterance,
            text_length=event.text_length,
            voiced_length=event.voiced_length,
            stopped=event.stopped,
            frames=event.frames,
        )
    )


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str
) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it always raises
