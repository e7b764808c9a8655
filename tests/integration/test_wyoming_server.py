"""The Wyoming TTS server, driven by the `wyoming` package's own async client, with the event
order and audio format fields wyoming-piper's clients (Home Assistant) expect."""

from __future__ import annotations

from typing import Any

import pytest
from duplex.orchestrator.app import OrchestratorServer
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

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


async def test_describe_lists_the_fleets_voices_and_languages(redis_url: str) -> None:
    async with fleet(redis_url, tone_rtf=0.0, config=api_config(redis_url, wyoming=True)) as orch:
        (answer,) = await events_of(wyoming_port(orch), Describe().event(), until=("info",))
    info = Info.from_event(answer)
    (program,) = info.tts
    assert [(v.name, v.languages) for v in program.voices] == [("tone-fast", ["en"])]
    assert program.installed and program.voices[0].installed


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
