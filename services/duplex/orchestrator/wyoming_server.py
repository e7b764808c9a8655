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
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error as WyomingError
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from duplex.orchestrator.config import WyomingConfig
from duplex.orchestrator.errors import DuplexError
from duplex.orchestrator.transports.speech_stream import (
    ApiKind,
    SpeechRequest,
    SpeechService,
    SpeechStream,
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
        supports_synthesize_streaming=True,
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
    """One client: events in, answers out, one request at a time (a streamed request reads
    its text chunks while its audio goes out)."""

    def __init__(
        self, speech: SpeechService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._speech = speech
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()  # audio and describe answers may interleave

    async def run(self) -> None:
        while (event := await self._read()) is not None:
            if Describe.is_type(event.type):
                await self._write(describe(self._speech.models()).event())
            elif SynthesizeStart.is_type(event.type):
                await self._synthesize_streamed(SynthesizeStart.from_event(event))
            elif Synthesize.is_type(event.type):
                await self._synthesize(Synthesize.from_event(event))

    async def _read(self) -> Event | None:
        """The next event; None when the client has gone or stayed silent too long."""
        try:
            async with asyncio.timeout(_IDLE_TIMEOUT_S):
                return await async_read_event(self._reader)
        except TimeoutError:
            return None

    async def _write(self, event: Event) -> None:
        async with self._write_lock, asyncio.timeout(_WRITE_TIMEOUT_S):
            await async_write_event(event, self._writer)

    async def _synthesize(self, request: Synthesize) -> None:
        started = time.monotonic()
        chosen = await self._choose(request.voice)
        if chosen is None:
            return
        if not request.text.strip():
            self._count("empty_text")
            await self._refuse("empty_text", "the text is empty")
            return
        model_id, language = chosen
        await self._speak(SpeechRequest(request.text, model_id, language, SAMPLE_RATE), started)

    async def _synthesize_streamed(self, start: SynthesizeStart) -> None:
        """synthesize-start, synthesize-chunk..., synthesize-stop (a `synthesize` within is
        the client's copy of the whole text for servers that do not stream: ignored), as
        one session fed as the text comes. Answered with audio-start, audio-chunk...,
        audio-stop (or an error), then synthesize-stopped."""
        started = time.monotonic()
        chosen = await self._choose(start.voice)
        stopped = False
        if chosen is not None:
            model_id, language = chosen
            request = SpeechRequest(None, model_id, language, SAMPLE_RATE)
            stopped = await self._speak(request, started, streamed=True)
        while not stopped:  # refused: read the rest of the request
            event = await self._read()
            if event is None:
                return
            stopped = SynthesizeStop.is_type(event.type)
        await self._write(SynthesizeStopped().event())

    async def _choose(self, voice: SynthesizeVoice | None) -> tuple[str, str] | None:
        """(model id, language) for the request's voice; None once refused."""
        chosen = pick_voice(
            self._speech.models(),
            voice.name if voice else None,
            voice.language if voice else None,
            self._speech.config.openai.default_voice,
        )
        if chosen is None:
            self._count("voice_not_found")
            await self._refuse("voice_not_found", f"no live worker offers the voice {voice}")
        return chosen

    async def _speak(
        self, request: SpeechRequest, started: float, *, streamed: bool = False
    ) -> bool:
        """Stream the request's audio; for a streamed request, True once its
        synthesize-stop has been read (False: the client went away, or an error came
        first and the rest of the request is still to be read)."""
        counted = False
        stopped = False
        feeder: asyncio.Task[bool] | None = None
        try:
            async with self._speech.speak(ApiKind.WYOMING, request) as stream:
                audio = asyncio.create_task(self._send_audio(stream, started), name="wyoming-audio")
                tasks: set[asyncio.Task[Any]] = {audio}
                if streamed:
                    feeder = asyncio.create_task(self._feed(stream), name="wyoming-feed")
                    tasks.add(feeder)
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    if feeder in done and not feeder.result():
                        return False  # the client went away mid-request
                    await audio
                    if feeder is not None:
                        stopped = await feeder
                finally:
                    await _cancel(audio)
                # Counted before the last event: a client may read the metrics right after it.
                counted = True
                self._count("ok")
                await self._write(AudioStop().event())
        except DuplexError as err:
            counted = True
            self._count(err.code.value.lower())
            await self._refuse(err.code.value.lower(), err.message)
        finally:
            if feeder is not None:
                await _cancel(feeder)
            if not counted:
                self._count("client_gone")
        return stopped

    async def _send_audio(self, stream: SpeechStream, started: float) -> None:
        await self._write(AudioStart(SAMPLE_RATE, _WIDTH, 1).event())
        first = True
        async for frame in stream.frames():
            await self._write(AudioChunk(SAMPLE_RATE, _WIDTH, 1, frame.pcm).event())
            if first:
                first = False
                self._speech.metrics.api_first_audio_seconds.labels(
                    api=ApiKind.WYOMING.value
                ).observe(time.monotonic() - started)

    async def _feed(self, stream: SpeechStream) -> bool:
        """A streamed request's text into its session; True at synthesize-stop, False if
        the client went away first."""
        while (event := await self._read()) is not None:
            if SynthesizeChunk.is_type(event.type):
                await stream.push(SynthesizeChunk.from_event(event).text)
            elif SynthesizeStop.is_type(event.type):
                await stream.finish()
                return True
            elif Describe.is_type(event.type):
                await self._write(describe(self._speech.models()).event())
        return False

    def _count(self, status: str) -> None:
        self._speech.metrics.api_requests_total.labels(
            api=ApiKind.WYOMING.value, status=status
        ).inc()

    async def _refuse(self, code: str, text: str) -> None:
        log.info("wyoming request refused", extra={"code": code, "why": text})
        await self._write(WyomingError(text=text, code=code).event())


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if it still runs and wait for it; its own errors are the caller's."""
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
