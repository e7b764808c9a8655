"""A Wyoming TTS server over the fleet (Home Assistant's protocol, as wyoming-piper speaks it).

`describe` answers `info` with one TTS program whose voices are the fleet's models, live
from the registry; `synthesize` streams `audio-start`, `audio-chunk`s and `audio-stop` from
the routed worker, each request a session of the shared session layer (routing, in-flight
counts, failover). A voice is chosen by name (a fleet model), else by language, else the
default voice (`openai.default_voice`, or the first English model). Refusals are Wyoming
`error` events. Wyoming has no authentication: the server listens on `wyoming.host`
(loopback by default) and only when `wyoming.enabled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error as WyomingError
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.tts import Synthesize

from duplex.orchestrator.config import WyomingConfig
from duplex.orchestrator.errors import DuplexError
from duplex.orchestrator.transports.speech_stream import (
    ApiKind,
    SpeechRequest,
    SpeechService,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
_WIDTH = 2  # s16le
_WRITE_TIMEOUT_S = 10.0
_IDLE_TIMEOUT_S = 300.0  # a connection that sends nothing for this long is closed
_STOP_TIMEOUT_S = 5.0
_ATTRIBUTION = Attribution(name="duplex", url="https://github.com/")


def pick_voice(
    fleet: Sequence[Mapping[str, object]], name: str | None, language: str | None, default: str
) -> tuple[str, str] | None:
    """(model id, language) for a synthesize request's voice, or None when none fits."""
    by_id = {str(m["id"]): m for m in fleet}
    if name:
        chosen = by_id.get(name)
        return (name, str(chosen.get("language") or "en")) if chosen else None
    if language:
        for model in fleet:
            if str(model.get("language", "")).split("-")[0] == language.split("-")[0].split("_")[0]:
                return str(model["id"]), str(model.get("language") or language)
        return None
    if default in by_id:
        return default, str(by_id[default].get("language") or "en")
    for model in fleet:
        if str(model.get("language", "")).startswith("en"):
            return str(model["id"]), str(model["language"])
    return (str(fleet[0]["id"]), str(fleet[0].get("language") or "en")) if fleet else None


def describe(fleet: Sequence[Mapping[str, object]]) -> Info:
    """The fleet's voices as one Wyoming TTS program."""
    voices = [
        TtsVoice(
            name=str(m["id"]),
            attribution=_ATTRIBUTION,
            installed=True,
            description=f"{m['id']} (workers: {', '.join(map(str, m.get('workers', [])))})",  # type: ignore[call-overload]
            version=None,
            languages=[str(m.get("language") or "en")],
        )
        for m in fleet
    ]
    program = TtsProgram(
        name="duplex",
        attribution=_ATTRIBUTION,
        installed=True,
        description="a fleet of TTS workers, routed with failover",
        version=None,
        voices=voices,
    )
    return Info(tts=[program])


class WyomingServer:
    """Serves Wyoming on `config.host:config.port` (port 0: a free one, see `port`)."""

    def __init__(self, speech: SpeechService, config: WyomingConfig) -> None:
        self._speech = speech
        self._config = config
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = config.port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connected, host=self._config.host, port=self._config.port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("wyoming server listening", extra={"host": self._config.host, "port": self.port})

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await server.wait_closed()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await _Connection(self._speech, reader, writer).run()
        except Exception:
            # A task boundary: one client's failure ends its connection only.
            log.exception("wyoming connection failed")
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await writer.wait_closed()


class _Connection:
    """One client: events in, answers out, one request at a time."""

    def __init__(
        self, speech: SpeechService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._speech = speech
        self._reader = reader
        self._writer = writer

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(_IDLE_TIMEOUT_S):
                    event = await async_read_event(self._reader)
            except TimeoutError:
                return
            if event is None:
                return
            if Describe.is_type(event.type):
                await self._write(describe(self._speech.models()).event())
            elif Synthesize.is_type(event.type):
                await self._synthesize(Synthesize.from_event(event))

    async def _write(self, event: Event) -> None:
        async with asyncio.timeout(_WRITE_TIMEOUT_S):
            await async_write_event(event, self._writer)

    async def _synthesize(self, request: Synthesize) -> None:
        started = time.monotonic()
        metrics = self._speech.metrics
        voice = request.voice
        chosen = pick_voice(
            self._speech.models(),
            voice.name if voice else None,
            voice.language if voice else None,
            self._speech.config.openai.default_voice,
        )
        if chosen is None or not request.text.strip():
            code, why = (
                ("voice_not_found", f"no live worker offers the voice {voice}")
                if chosen is None
                else ("empty_text", "the text is empty")
            )
            self._count(code)
            await self._refuse(code, why)
            return
        model_id, language = chosen
        counted = False
        try:
            async with self._speech.speak(
                ApiKind.WYOMING, SpeechRequest(request.text, model_id, language, SAMPLE_RATE)
            ) as stream:
                await self._write(AudioStart(SAMPLE_RATE, _WIDTH, 1).event())
                first = True
                async for frame in stream.frames():
                    await self._write(AudioChunk(SAMPLE_RATE, _WIDTH, 1, frame.pcm).event())
                    if first:
                        first = False
                        metrics.api_first_audio_seconds.labels(api=ApiKind.WYOMING.value).observe(
                            time.monotonic() - started
                        )
                # Counted before the last event: a client may read the metrics right after it.
                counted = True
                self._count("ok")
                await self._write(AudioStop().event())
        except DuplexError as err:
            counted = True
            self._count(err.code.value.lower())
            await self._refuse(err.code.value.lower(), err.message)
        finally:
            if not counted:
                self._count("client_gone")

    def _count(self, status: str) -> None:
        self._speech.metrics.api_requests_total.labels(
            api=ApiKind.WYOMING.value, status=status
        ).inc()

    async def _refuse(self, code: str, text: str) -> None:
        log.info("wyoming request refused", extra={"code": code, "why": text})
        await self._write(WyomingError(text=text, code=code).event())
