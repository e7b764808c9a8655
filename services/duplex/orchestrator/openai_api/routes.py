"""`POST /v1/audio/speech`, `GET /v1/models` and `GET /v1/models/{id}`.

The speech response's status is decided by the first audio frame: everything refused before
it (unknown voice, no worker, capacity, a worker that failed at once) gets its OpenAI error
and status; from then on the bytes stream as the worker makes them. A stream that breaks
after audio was sent (no worker left to finish) ends without its last chunk, so the client
sees a truncated response rather than a short file; with `stream_format: sse` it gets an
`error` event instead. A client that goes away ends the session at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.openai_api.encoders import (
    CONTENT_TYPES,
    Encoder,
    available_formats,
    make_encoder,
)
from duplex.orchestrator.openai_api.errors import ApiError, from_session
from duplex.orchestrator.openai_api.request import (
    MAX_BODY_BYTES,
    SpeechParams,
    StreamFormat,
    parse_speech,
)
from duplex.orchestrator.transports.speech_stream import (
    ApiKind,
    SpeechFailed,
    SpeechRefused,
    SpeechRequest,
    SpeechService,
    SpeechStream,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000  # OpenAI's pcm is 24 kHz s16le mono; every format here uses that rate
_CLIENT_GONE = "499"  # nginx's status for a client that closed the connection
_BROKEN = "502"  # the stream broke after audio was sent (the HTTP status was already 200)

SpeechSource = Callable[[], SpeechService]


def openai_routes(source: SpeechSource) -> list[BaseRoute]:
    """The OpenAI-compatible routes; `source` gives the running app's speech service."""

    async def speech(request: Request) -> Response:
        started = time.monotonic()
        service = source()
        try:
            raw = await _read_body(request)
            params = parse_speech(
                raw,
                service.models(),
                default_voice=service.config.openai.default_voice,
                formats=available_formats(),
            )
            if params.speed != 1.0 and not service.can_change_speed(params.model_id):
                raise ApiError(
                    400,
                    f"'speed' {params.speed:g} is not supported by {params.model_id!r}: no live "
                    "worker of that model can change its speaking rate; send 1.0 or leave it out",
                    param="speed",
                    code="unsupported_value",
                )
        except ApiError as err:
            return _refuse(service, err)
        except ClientDisconnect:
            _count(service, _CLIENT_GONE)
            return Response(status_code=400)
        return await _SpeechResponse.open(service, params, started)

    async def models(request: Request) -> Response:
        data = [_model_object(m) for m in source().models()]
        return JSONResponse({"object": "list", "data": data})

    async def model(request: Request) -> Response:
        wanted = str(request.path_params["model_id"])
        for m in source().models():
            if m["id"] == wanted:
                return JSONResponse(_model_object(m))
        return ApiError(404, f"unknown model {wanted!r}", param="model",
                        code="model_not_found").response()  # fmt: skip

    return [
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
    ]


def _model_object(model: dict[str, object]) -> dict[str, object]:
    return {
        "id": model["id"],
        "object": "model",
        "created": 0,
        "owned_by": "duplex",
        "language": model.get("language", ""),
        "workers": model.get("workers", []),
    }


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(400, f"the body is over {MAX_BODY_BYTES} bytes", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _count(service: SpeechService, status: str) -> None:
    service.metrics.api_requests_total.labels(api=ApiKind.OPENAI.value, status=status).inc()


def _refuse(service: SpeechService, err: ApiError) -> Response:
    _count(service, str(err.status))
    log.info("speech request refused", extra={"status": err.status, "code": err.code,
                                              "why": err.message})  # fmt: skip
    return err.response()


class _SpeechResponse(Response):
    """Streams one request's audio; owns its session from the first frame to the end."""

    def __init__(
        self,
        service: SpeechService,
        params: SpeechParams,
        stack: contextlib.AsyncExitStack,
        stream: SpeechStream,
        frames: AsyncIterator[PcmFrame],
        first: PcmFrame,
        started: float,
    ) -> None:
        sse = params.stream_format is StreamFormat.SSE
        media = "text/event-stream" if sse else CONTENT_TYPES[params.response_format]
        super().__init__(media_type=media)
        # Streamed (chunked): no Content-Length.
        self.raw_headers = [(b"content-type", media.encode()), (b"cache-control", b"no-store")]
        self._service = service
        self._params = params
        self._sse = sse
        self._stack = stack
        self._stream = stream
        self._frames = frames
        self._first = first
        self._started = started
        self._encoder: Encoder = make_encoder(params.response_format, SAMPLE_RATE)

    @classmethod
    async def open(cls, service: SpeechService, params: SpeechParams, started: float) -> Response:
        """Start the session and wait for its first frame; an error response if refused."""
        stack = contextlib.AsyncExitStack()
        request = SpeechRequest(
            params.text, params.model_id, params.language, SAMPLE_RATE, params.speed
        )
        try:
            stream = await stack.enter_async_context(service.speak(ApiKind.OPENAI, request))
            frames = aiter(stream.frames())
            try:
                first = await anext(frames)
            except StopAsyncIteration:
                first = PcmFrame(b"", SAMPLE_RATE)  # nothing to voice (punctuation only)
        except (SpeechRefused, SpeechFailed) as err:
            await stack.aclose()
            return _refuse(service, from_session(err.code, err.message))
        except BaseException:
            await stack.aclose()
            raise
        return cls(service, params, stack, stream, frames, first, started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = _BROKEN
        writer = asyncio.create_task(self._write(send), name="openai-speech-writer")
        watcher = asyncio.create_task(_client_gone(receive), name="openai-speech-watch")
        try:
            done, _ = await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            status = writer.result() if writer in done else _CLIENT_GONE
        finally:
            for task in (writer, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            close = getattr(self._encoder, "close", None)
            if close is not None:
                close()
            await self._stack.aclose()
            _count(self._service, status)
            log.info(
                "speech request ended",
                extra={"session_id": self._stream.session_id, "worker": self._stream.worker,
                       "model_id": self._stream.model_id, "status": status,
                       "failovers": len(self._stream.failovers)},
            )  # fmt: skip

    async def _write(self, send: Send) -> str:
        """Send the response; returns its status label."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        first_sent = False
        frame: PcmFrame | None = self._first
        try:
            while frame is not None:
                data = self._encoder.encode(frame) if frame.pcm else b""
                if data:
                    await send(self._chunk(data))
                    if not first_sent:
                        first_sent = True
                        self._service.metrics.api_first_audio_seconds.labels(
                            api=ApiKind.OPENAI.value
                        ).observe(time.monotonic() - self._started)
                frame = await anext(self._frames, None)
        except SpeechFailed as err:
            log.warning(
                "speech stream broke after audio was sent",
                extra={"session_id": self._stream.session_id, "why": err.message},
            )
            if self._sse:
                error = from_session(err.code, err.message).body()
                await send(self._event({"type": "error", **error}, more=False))
            # Without the final empty chunk, the client reads a truncated response.
            return _BROKEN
        tail = self._encoder.finish()
        if tail:
            await send(self._chunk(tail))
        if self._sse:
            usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
            done: dict[str, object] = {"type": "speech.audio.done", "usage": usage}
            await send(self._event(done, more=False))
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "200"

    def _chunk(self, data: bytes) -> Message:
        if self._sse:
            audio = base64.b64encode(data).decode("ascii")
            return self._event({"type": "speech.audio.delta", "audio": audio}, more=True)
        return {"type": "http.response.body", "body": data, "more_body": True}

    @staticmethod
    def _event(payload: dict[str, object], *, more: bool) -> Message:
        body = f"data: {json.dumps(payload)}\n\n".encode()
        return {"type": "http.response.body", "body": body, "more_body": more}


async def _client_gone(receive: Receive) -> None:
    """Returns when the client disconnects."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
