"""`POST /v1/audio/speech` driven by the `openai` SDK, as an application would use it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.openai_fixtures import (
    PIPER_MODEL,
    RATE,
    api_config,
    fleet,
    pcm_of,
    sdk,
    stream_speech,
    transcript_wer,
)
from tests.integration.orchestrator_fixtures import tone_frames
from tests.integration.speech_check import load_whisper

SENTENCES = (
    "The quick brown fox jumps over the lazy dog. "
    "Please bring your notes to the meeting, and arrive early."
)
# The tone voice: 60 ms of audio a character per clause; at rtf 1 it takes as long to make.
TONE_TEXT = "One, two, three, four, five, six, seven, eight, nine, and ten."


@pytest.fixture(scope="module")
def whisper() -> Any:
    return load_whisper()


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
async def test_the_first_bytes_arrive_while_the_rest_is_still_being_synthesized(
    redis_url: str, fmt: str
) -> None:
    """A tone voice that takes real time to make its audio: the SDK reads the first bytes
    seconds before the last (a server that waited for the whole text would send them
    together), and the samples are exactly the voice's frames for the text."""
    async with fleet(redis_url, tone_rtf=1.0) as orch:
        got = await stream_speech(sdk(orch), TONE_TEXT, response_format=fmt)
    pcm = pcm_of(got.body, fmt)
    assert len(pcm) == tone_frames(TONE_TEXT) * RATE // 50 * 2
    audio_s = len(pcm) / 2 / RATE
    print(f"\n{fmt}: first bytes after {got.first_s * 1000:.0f} ms, last {got.spread_s:.2f} s "
          f"later, {audio_s:.2f} s of audio")  # fmt: skip
    # Made at real time: the audio's last second cannot exist when the first bytes came.
    assert got.spread_s > audio_s / 2


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
async def test_piper_speech_through_the_sdk_is_transcribed_by_whisper(
    redis_url: str, whisper: Any, fmt: str
) -> None:
    """Piper's voice, 24 kHz s16le mono as OpenAI sends it: Whisper reads the words back."""
    async with fleet(redis_url, piper=True) as orch:
        got = await stream_speech(sdk(orch), SENTENCES, response_format=fmt, voice=PIPER_MODEL)
    wer, text = transcript_wer(whisper, pcm_of(got.body, fmt), SENTENCES)
    print(f"\n{fmt}: first bytes after {got.first_s * 1000:.0f} ms; heard: {text!r}")
    assert wer <= 0.10, text


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac"])
async def test_compressed_formats_decode_to_the_spoken_length(redis_url: str, fmt: str) -> None:
    """mp3 (LiveKit's default), opus, aac and flac stream and decode (PyAV) to about the
    tone voice's length."""
    import io

    import av

    async with fleet(redis_url, tone_rtf=0.0) as orch:
        got = await stream_speech(sdk(orch), TONE_TEXT, response_format=fmt)
    with av.open(io.BytesIO(got.body), mode="r") as container:
        samples = sum(int(f.samples) for f in container.decode(audio=0))
        rate = container.streams.audio[0].rate
    expected = tone_frames(TONE_TEXT) * 0.02
    assert abs(samples / rate - expected) < 0.15, (samples, rate, expected)


async def test_sse_sends_base64_deltas_then_done(redis_url: str) -> None:
    """stream_format sse: `speech.audio.delta` events whose audio joins to the pcm, then
    `speech.audio.done`."""
    import base64

    async with fleet(redis_url, tone_rtf=0.0) as orch:
        client = sdk(orch)
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TONE_TEXT, response_format="pcm",
            stream_format="sse",
        ) as resp:  # fmt: skip
            assert resp.headers["content-type"].startswith("text/event-stream")
            body = (await resp.read()).decode()
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    deltas = events[:-1]
    assert deltas and all(e["type"] == "speech.audio.delta" for e in deltas)
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(pcm) == tone_frames(TONE_TEXT) * RATE // 50 * 2


async def test_models_lists_the_fleet_live_from_the_registry(redis_url: str) -> None:
    """GET /v1/models: the workers' models in OpenAI's list shape; one by id; 404 unknown."""
    async with fleet(redis_url, tone_rtf=0.0, config=api_config(redis_url)) as orch:
        client = sdk(orch)
        listed = await client.models.list()
        one = await client.models.retrieve("tone-fast")
        with pytest.raises(Exception) as missing:
            await client.models.retrieve("no-such-model")
    assert [m.id for m in listed.data] == ["tone-fast"]
    assert one.id == "tone-fast" and one.owned_by == "duplex"
    assert getattr(missing.value, "status_code", None) == 404
