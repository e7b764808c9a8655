"""Barge-in over the WebSocket: a real client streams mic frames (real Piper speech) while a
real tone worker speaks through a real orchestrator; both policies, a false interruption
resumed and a real one stopped.

The tone voice says 60 ms per character, so the text a client heard can be computed from
the frames it received and compared with the orchestrator's `heard_text`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from duplex.orchestrator.app import OrchestratorServer

from tests.integration.mic_audio import Int16Array, frames, piper_speech, silence
from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    tone_frames,
    wait_for_workers,
)
from tests.integration.worker_fixtures import running_worker, worker_config

RATE = 16000
# No punctuation inside: one long clause (after the first, cut at a word within 40 chars).
TEXT = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
SHORT = "Yes."  # well under false_interruption_ms (1500)
LONG = "Wait a moment I would like to ask you something about that."


@pytest.fixture(scope="module")
def speech() -> dict[str, Int16Array]:
    short, long = piper_speech([SHORT, LONG], RATE)
    assert len(short) < RATE * 0.8 and len(long) > RATE * 2.0
    return {"short": short, "long": long}


@pytest.fixture(params=["webrtc"])
async def orch(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[OrchestratorServer]:
    config = orch_config(redis_url)
    config = replace(config, vad=replace(config.vad, engine=request.param))
    async with (
        running_worker(worker_config(redis_url, name="w1", sample_rate=RATE)),
        running_orchestrator(config) as server,
    ):
        await wait_for_workers(server, {"w1"})
        yield server


async def stream_mic(client: Client, chunks: list[bytes]) -> None:
    """Send 20 ms frames at real time (a microphone), stopping if the connection closes."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, chunk in enumerate(chunks):
        if client.closed:
            return
        await client.ws.send(chunk)
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))


async def speak_and_barge_in(
    client: Client, mic: list[Int16Array], policy: str, *, until: Any
) -> dict[str, Any]:
    started = await client.start(
        model_id="tone-fast", sample_rate=RATE, barge_in={"policy": policy}
    )
    assert started["type"] == "SessionStarted", started
    await client.text(TEXT, is_final=True)
    await client.wait_for(lambda got: len(got.utterance(0).frames) >= 25)  # 0.5 s heard
    sender = asyncio.create_task(stream_mic(client, frames(mic, RATE)))
    try:
        await client.wait_for(until, limit_s=15)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    barge = client.got.of_type("BargeIn")
    assert len(barge) == 1, client.got.messages
    return barge[0]


def check_heard(barge: dict[str, Any], frames_before: int) -> None:
    """heard_text is a whole-word prefix of TEXT and matches the audio the client had."""
    heard = barge["heard_text"]
    assert barge["utterance"] == 0
    assert TEXT.startswith(heard) and barge["heard_chars"] == len(heard)
    assert heard == "" or TEXT[len(heard) : len(heard) + 1] in (" ", "")
    assert barge["heard_precision"] in ("clause", "estimate")
    assert barge["at_ms"] == frames_before * 20
    # 60 ms a character: the audio had reached this character; the estimate stops at the
    # word before it (a word here is at most 10 characters).
    reached = frames_before * 20 // 60
    assert reached - 12 <= len(heard) <= reached + 1, (heard, reached)
    assert 0 < barge["latency_ms"] < 1000


@pytest.mark.parametrize("orch", ["webrtc", "silero"], indirect=True)
async def test_stop_policy_cuts_the_voice_and_reports_what_was_heard(
    orch: OrchestratorServer, speech: dict[str, Int16Array]
) -> None:
    """Speech over the voice: BargeIn with the heard text, no audio after it, the utterance
    ends (AudioEnd) and BargeInEnd says it was not resumed."""
    async with Client(orch) as client:
        barge = await speak_and_barge_in(
            client,
            [silence(RATE, 300), speech["long"]],
            "stop",
            until=lambda got: 0 in got.audio_ends(),
        )
        await asyncio.sleep(0.3)  # anything still on its way would arrive now
        utt = client.got.utterance(0)
        before = utt.marks["BargeIn"]
        assert before == len(utt.frames), "audio was sent after BargeIn"
        check_heard(barge, before)
        assert len(utt.frames) < tone_frames(TEXT) - 50
        kinds = [m["type"] for m in client.got.messages]
        assert kinds.index("BargeIn") < kinds.index("BargeInEnd") < kinds.index("AudioEnd")
        assert client.got.of_type("BargeInEnd") == [{"type": "BargeInEnd", "resumed": False}]


async def test_resume_policy_resumes_after_a_false_interruption(
    orch: OrchestratorServer, speech: dict[str, Int16Array]
) -> None:
    """A short "yes" over the voice pauses it; when the speech ends within
    false_interruption_ms the utterance goes on from the cut to its end."""
    async with Client(orch) as client:
        await speak_and_barge_in(
            client,
            [silence(RATE, 300), speech["short"], silence(RATE, 1000)],
            "resume",
            until=lambda got: 0 in got.audio_ends(),
        )
        assert client.got.of_type("BargeInEnd") == [{"type": "BargeInEnd", "resumed": True}]
        utt = client.got.utterance(0)
        at_barge_in = utt.marks["BargeIn"]
        assert len(utt.frames) > at_barge_in  # the voice came back
        # Everything was said but the one frame the cut faded out.
        assert len(utt.frames) >= tone_frames(TEXT) - 2


async def test_resume_policy_stops_on_a_real_interruption(
    orch: OrchestratorServer, speech: dict[str, Int16Array]
) -> None:
    """Speech longer than false_interruption_ms is a real interruption: the held rest of the
    utterance is dropped, BargeInEnd {resumed: false}, AudioEnd, and no more audio."""
    async with Client(orch) as client:
        await speak_and_barge_in(
            client,
            [silence(RATE, 300), speech["long"]],
            "resume",
            until=lambda got: 0 in got.audio_ends(),
        )
        assert client.got.of_type("BargeInEnd") == [{"type": "BargeInEnd", "resumed": False}]
        await asyncio.sleep(0.3)
        utt = client.got.utterance(0)
        assert utt.marks["BargeIn"] == len(utt.frames)
        assert len(utt.frames) < tone_frames(TEXT) - 50


async def test_speech_while_listening_is_not_a_barge_in(
    orch: OrchestratorServer, speech: dict[str, Int16Array]
) -> None:
    """The user speaking while the system is silent interrupts nothing; the session goes on."""
    async with Client(orch) as client:
        await client.start(model_id="tone-fast", sample_rate=RATE)
        await stream_mic(client, frames([silence(RATE, 200), speech["short"]], RATE))
        utt = await client.say("ok then")
        assert utt.frames and not client.got.of_type("BargeIn")


async def test_barge_in_can_be_turned_off_per_session(
    orch: OrchestratorServer, speech: dict[str, Int16Array]
) -> None:
    """SessionStart.barge_in.enabled false: speech over the voice does not cut it."""
    async with Client(orch) as client:
        await client.start(model_id="tone-fast", sample_rate=RATE, barge_in={"enabled": False})
        await client.text("one two three four five six", is_final=True)
        await client.wait_for(lambda got: len(got.utterance(0).frames) >= 5)
        await stream_mic(client, frames([speech["short"], silence(RATE, 400)], RATE))
        await client.wait_for(lambda got: 0 in got.audio_ends())
        assert not client.got.of_type("BargeIn")
        assert len(client.got.utterance(0).frames) == tone_frames("one two three four five six")


def test_mic_audio_fixture_is_speech_shaped(speech: dict[str, Int16Array]) -> None:
    """The Piper clips are loud speech, not silence (a guard for the tests above)."""
    for clip in speech.values():
        assert np.abs(clip.astype(np.int32)).max() > 3000
