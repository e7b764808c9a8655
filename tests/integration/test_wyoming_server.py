"""The Wyoming TTS server, driven by the `wyoming` package's own async client, with the event
order and audio format fields wyoming-piper's clients (Home Assistant) expect, for one-shot
`synthesize` and for streaming synthesis (synthesize-start / -chunk / -stop)."""

from __future__ import annotations

from typing import Any

import pytest
from duplex.orchestrator.app import OrchestratorServer
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from tests.integration.openai_fixtures import (
    PIPER_MODEL,
    api_config,
    fleet,
    transcript_wer,
)
from tests.integration.orchestrator_fixtures import tone_frames
from tests.integration.speech_check import load_whisper

TONE_TEXT = "One, two, three, and four."
SENTENCE = (
    "The quick brown fox jumps over the lazy dog. "
    "Please bring your notes to the meeting, and arrive early."
)


def wyoming_port(orch: OrchestratorServer) -> int:
    return int(orch.app.state.runtime.wyoming.port)


async def events_of(port: int, request: Event, *, until: tuple[str, ...]) -> list[Event]:
    """Send one event; read events until one of type `until` (the client's deadline: 30 s)."""
    got: list[Event] = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(request)
        while True:
            event = await client.read_event()
            assert event is not None, f"connection closed after {[e.type for e in got]}"
            got.append(event)
            if event.type in until:
                return got


async def streamed_events(port: int, voice: SynthesizeVoice, chunks: list[str]) -> list[Event]:
    """A streamed request as Home Assistant sends it: synthesize-start, the text in chunks,
    a `synthesize` with the whole text (for servers that do not stream), synthesize-stop;
    events read until synthesize-stopped."""
    got: list[Event] = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart(voice=voice).event())
        for chunk in chunks:
            await client.write_event(SynthesizeChunk(chunk).event())
        await client.write_event(Synthesize("".join(chunks), voice=voice).event())
        await client.write_event(SynthesizeStop().event())
        while True:
            event = await client.read_event()
            assert event is not None, f"connection closed after {[e.type for e in got]}"
            got.append(event)
            if SynthesizeStopped.is_type(event.type):
                return got


def audio_of(events: list[Event]) -> tuple[AudioStart, bytes]:
    """The one audio-start and the PCM of the chunks between it and audio-stop."""
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop", types
    assert set(types[1:-1]) == {"audio-chunk"}, types
    return AudioStart.from_event(events[0]), b"".join(
        AudioChunk.from_event(e).audio for e in events[1:-1]
    )


async def test_describe_lists_the_fleets_voices_and_languages(redis_url: str) -> None:
    async with fleet(redis_url, tone_rtf=0.0, config=api_config(redis_url, wyoming=True)) as orch:
        (answer,) = await events_of(wyoming_port(orch), Describe().event(), until=("info",))
    info = Info.from_event(answer)
    (program,) = info.tts
    assert [(v.name, v.languages) for v in program.voices] == [("tone-fast", ["en"])]
    assert program.installed and program.voices[0].installed
    assert program.supports_synthesize_streaming


async def test_synthesize_streams_start_chunks_stop_in_one_format(redis_url: str) -> None:
    """audio-start, audio-chunks with the same rate/width/channels, audio-stop last; the
    samples are exactly the tone voice's for the text; the request is counted."""
    async with fleet(redis_url, tone_rtf=0.0, config=api_config(redis_url, wyoming=True)) as orch:
        request = Synthesize(TONE_TEXT, voice=SynthesizeVoice(name="tone-fast")).event()
        events = await events_of(wyoming_port(orch), request, until=("audio-stop", "error"))
        metrics = orch.app.state.runtime.metrics.render().decode()
    assert AudioStart.is_type(events[0].type) and AudioStop.is_type(events[-1].type)
    start = AudioStart.from_event(events[0])
    chunks = [AudioChunk.from_event(e) for e in events[1:-1]]
    assert chunks and all(AudioChunk.is_type(e.type) for e in events[1:-1])
    assert {(c.rate, c.width, c.channels) for c in chunks} == {(start.rate, 2, 1)}
    samples = sum(len(c.audio) for c in chunks) // 2
    assert samples == tone_frames(TONE_TEXT) * start.rate // 50
    assert 'duplex_orch_api_requests_total{api="wyoming",status="ok"} 1.0' in metrics
    assert 'duplex_orch_api_first_audio_seconds_count{api="wyoming"} 1.0' in metrics


async def test_an_unknown_voice_gets_an_error_event(redis_url: str) -> None:
    async with fleet(redis_url, tone_rtf=0.0, config=api_config(redis_url, wyoming=True)) as orch:
        request = Synthesize("Hello.", voice=SynthesizeVoice(name="nobody")).event()
        (event,) = await events_of(wyoming_port(orch), request, until=("error", "audio-stop"))
    assert Error.from_event(event).code == "voice_not_found"


@pytest.fixture(scope="module")
def whisper() -> Any:
    return load_whisper()


async def test_piper_through_wyoming_is_transcribed_by_whisper(
    redis_url: str, whisper: Any
) -> None:
    """A voice chosen by language (as Home Assistant may ask) speaks words Whisper reads."""
    config = api_config(redis_url, wyoming=True)
    async with fleet(redis_url, piper=True, config=config) as orch:
        request = Synthesize(SENTENCE, voice=SynthesizeVoice(language="en_US")).event()
        events = await events_of(wyoming_port(orch), request, until=("audio-stop", "error"))
    start = AudioStart.from_event(events[0])
    pcm = b"".join(AudioChunk.from_event(e).audio for e in events[1:-1])
    wer, text = transcript_wer(whisper, pcm, SENTENCE, start.rate)
    print(f"\nwyoming ({PIPER_MODEL}): heard {text!r}")
    assert wer <= 0.10, text


async def test_streamed_text_comes_back_as_one_audio_stream_then_synthesize_stopped(
    redis_url: str,
) -> None:
    """Chunks cut mid-word: one audio-start / audio-chunks / audio-stop, exactly the tone
    voice's samples for the whole text, then synthesize-stopped; the `synthesize` copy of
    the text is not spoken a second time."""
    async with fleet(redis_url, tone_rtf=0.0, config=api_config(redis_url, wyoming=True)) as orch:
        chunks = ["One, two, th", "ree, and", " four."]
        events = await streamed_events(wyoming_port(orch), SynthesizeVoice("tone-fast"), chunks)
        metrics = orch.app.state.runtime.metrics.render().decode()
    assert SynthesizeStopped.is_type(events[-1].type)
    start, pcm = audio_of(events[:-1])
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    assert len(pcm) // 2 == tone_frames(TONE_TEXT) * start.rate // 50
    assert 'duplex_orch_api_requests_total{api="wyoming",status="ok"} 1.0' in metrics


async def test_a_streamed_request_for_an_unknown_voice_gets_an_error_then_stopped(
    redis_url: str,
) -> None:
    async with fleet(redis_url, tone_rtf=0.0, config=api_config(redis_url, wyoming=True)) as orch:
        events = await streamed_events(wyoming_port(orch), SynthesizeVoice("nobody"), ["Hi."])
    assert [e.type for e in events] == ["error", "synthesize-stopped"]
    assert Error.from_event(events[0]).code == "voice_not_found"


async def test_piper_streamed_word_by_word_is_transcribed_by_whisper(
    redis_url: str, whisper: Any
) -> None:
    """Text streamed a word at a time (as an LLM writes it) is spoken as whole clauses."""
    config = api_config(redis_url, wyoming=True)
    words = [w + " " for w in SENTENCE.split(" ")]
    async with fleet(redis_url, piper=True, config=config) as orch:
        events = await streamed_events(wyoming_port(orch), SynthesizeVoice(PIPER_MODEL), words)
    start, pcm = audio_of(events[:-1])
    wer, text = transcript_wer(whisper, pcm, SENTENCE, start.rate)
    print(f"\nwyoming streamed ({PIPER_MODEL}): heard {text!r}")
    assert wer <= 0.10, text
