"""Barge-in over WebRTC: a real aiortc client peer plays real Piper speech on its mic track
while a real tone worker speaks through the real orchestrator.

The tone voice says 60 ms per character at a steady level, so the client can count the frames
of voice it heard (decoded Opus) and compare them with the session's `at_ms`/`heard_text`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from duplex.orchestrator.app import OrchestratorServer
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.mic_audio import Int16Array, piper_speech, silence
from tests.integration.orchestrator_fixtures import (
    orch_config,
    running_orchestrator,
    tone_frames,
    wait_for_workers,
)
from tests.integration.rtc_client import RtcClient
from tests.integration.worker_fixtures import running_worker, worker_config

RATE = 48000
TEXT = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
LONG = "Wait a moment I would like to ask you something about that."
SHORT = "Yes."
VOICED = 3000  # the tone is at 0.3 full scale (~9800); a frame above this carries voice
QUIET = 300  # decoded Opus silence, and the cut's fade tail


@pytest.fixture(scope="module")
def speech() -> dict[str, Int16Array]:
    short, long = piper_speech([SHORT, LONG], RATE)
    return {"short": short, "long": long}


@pytest.fixture
async def orch(redis_url: str) -> AsyncIterator[OrchestratorServer]:
    config = orch_config(redis_url)
    rtc = replace(config.transport.webrtc, host_addresses=("127.0.0.1",))
    config = replace(config, transport=replace(config.transport, webrtc=rtc))
    async with (
        running_worker(worker_config(redis_url, name="w1")),
        running_orchestrator(config) as server,
    ):
        await wait_for_workers(server, {"w1"})
        yield server


def frames_sent(orch: OrchestratorServer) -> float:
    """The orchestrator's count of voice frames sent to clients (this test's orchestrator)."""
    body = orch.app.state.runtime.metrics.render().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        if family.name == "duplex_orch_frames_sent"
        for sample in family.samples
        if sample.name == "duplex_orch_frames_sent_total"
    )


def peaks(client: RtcClient) -> list[int]:
    return [int(np.abs(f.astype(np.int32)).max()) for f in client.got.audio]


async def speak_then_talk_over(
    client: RtcClient, mic: list[Int16Array], policy: str
) -> tuple[dict[str, Any], int]:
    """Start, say TEXT, and once 0.5 s of voice arrived play `mic`; returns the BargeIn and
    how many frames the client had received when it arrived."""
    await client.connect()
    await client.send(
        {"type": "SessionStart", "model_id": "tone-fast", "barge_in": {"policy": policy}}
    )
    await client.wait_for(lambda c: c.of_type("SessionStarted") or c.of_type("Error"))
    assert client.of_type("SessionStarted"), client.got.messages
    await client.send({"type": "TextChunk", "text": TEXT, "is_final": True})
    await client.wait_for(lambda c: sum(p > VOICED for p in peaks(c)) >= 25)
    assert client.mic is not None
    client.mic.play(np.concatenate(mic).astype("<i2").tobytes())
    await client.wait_for(lambda c: c.of_type("BargeIn"), limit_s=10)
    return client.of_type("BargeIn")[0], len(client.got.audio)


async def test_speech_on_the_mic_cuts_the_voice_and_reports_what_was_heard(
    orch: OrchestratorServer, speech: dict[str, Int16Array]
) -> None:
    """BargeIn arrives; after it only silence comes; at_ms and heard_text match the voice
    the client actually received."""
    async with RtcClient(orch.http_url) as client:
        barge, at_arrival = await speak_then_talk_over(
            client, [silence(RATE, 200), speech["long"]], "stop"
        )
        await client.wait_for(lambda c: c.of_type("AudioEnd"))
        await asyncio.sleep(0.5)  # anything still on its way (jitter buffer) arrives now
        levels = peaks(client)
        # aiortc's receiver holds ~80 ms (FIELD_NOTES): allow 10 frames in flight at BargeIn.
        assert max(levels[at_arrival + 10 :]) < QUIET, "voice arrived after the cut"
        voiced = sum(p > VOICED for p in levels)
        assert abs(barge["at_ms"] // 20 - voiced) <= 3, (barge["at_ms"], voiced)
        heard = barge["heard_text"]
        assert TEXT.startswith(heard) and barge["heard_chars"] == len(heard)
        reached = voiced * 20 // 60  # 60 ms a character
        assert reached - 12 <= len(heard) <= reached + 2, (heard, reached)
        assert voiced < tone_frames(TEXT) - 50
        assert client.of_type("BargeInEnd") == [{"type": "BargeInEnd", "resumed": False}]


async def test_a_false_interruption_resumes_the_voice_over_webrtc(
    orch: OrchestratorServer, speech: dict[str, Int16Array]
) -> None:
    """With policy resume a short "yes" pauses the voice; it comes back and the utterance is
    said to its end."""
    async with RtcClient(orch.http_url) as client:
        await speak_then_talk_over(
            client, [silence(RATE, 200), speech["short"], silence(RATE, 1000)], "resume"
        )
        await client.wait_for(lambda c: c.of_type("AudioEnd"), limit_s=20)
        assert client.of_type("BargeInEnd") == [{"type": "BargeInEnd", "resumed": True}]
        await asyncio.sleep(0.3)
        # The server sent the whole utterance: every frame of it left the orchestrator.
        assert frames_sent(orch) >= tone_frames(TEXT) - 4
        # What the client heard: aiortc's receiver (a 16-packet jitter buffer) drops packets
        # that come in a late burst when the machine is starved of CPU, as a real WebRTC
        # receiver would; a voice that did not come back would miss most of the utterance.
        voiced = sum(p > VOICED for p in peaks(client))
        assert voiced >= 0.9 * tone_frames(TEXT), voiced
