"""The optional spoken loop: with asr.enabled, a finished user utterance is transcribed
(Whisper tiny.en, offline) and sent as `Transcript`; with reply echo it is spoken back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import AsrConfig

from tests.integration.mic_audio import frames, piper_speech, silence
from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    wait_for_workers,
)
from tests.integration.worker_fixtures import running_worker, worker_config

RATE = 16000
SAID = "Please stop talking now."


@pytest.fixture
async def orch(redis_url: str) -> AsyncIterator[OrchestratorServer]:
    config = replace(orch_config(redis_url), asr=AsrConfig(enabled=True, reply="echo"))
    async with (
        running_worker(worker_config(redis_url, name="w1", sample_rate=RATE)),
        running_orchestrator(config) as server,
    ):
        await wait_for_workers(server, {"w1"})
        yield server


async def test_a_finished_utterance_is_transcribed_and_spoken_back(
    orch: OrchestratorServer,
) -> None:
    """Speech then silence: Transcript with the words, then the echo's audio and AudioEnd."""
    (speech,) = piper_speech([SAID], RATE)
    async with Client(orch) as client:
        await client.start(model_id="tone-fast", sample_rate=RATE)
        for chunk in frames([silence(RATE, 200), speech, silence(RATE, 600)], RATE):
            await client.ws.send(chunk)
            await asyncio.sleep(0.005)  # faster than real time: the VAD runs on audio time
        await client.wait_for(lambda got: got.of_type("Transcript"), limit_s=30)
        (transcript,) = client.got.of_type("Transcript")
        words = transcript["text"].lower().replace(".", "").replace(",", "").split()
        assert "stop" in words and "talking" in words, transcript
        await client.wait_for(lambda got: 0 in got.audio_ends(), limit_s=15)
        assert client.got.utterance(0).frames  # the echo was spoken
        assert not client.got.of_type("BargeIn")  # nothing was playing when the user spoke


async def test_without_asr_no_transcript_is_sent(redis_url: str) -> None:
    """asr.enabled false (the default): the user's speech is only heard for barge-in."""
    (speech,) = piper_speech([SAID], RATE)
    async with (
        running_worker(worker_config(redis_url, name="w1", sample_rate=RATE)),
        running_orchestrator(orch_config(redis_url)) as server,
    ):
        await wait_for_workers(server, {"w1"})
        async with Client(server) as client:
            await client.start(model_id="tone-fast", sample_rate=RATE)
            for chunk in frames([speech, silence(RATE, 600)], RATE):
                await client.ws.send(chunk)
            utt = await client.say("ok")
            assert utt.frames
            with contextlib.suppress(TimeoutError):
                await client.wait_for(lambda got: got.of_type("Transcript"), limit_s=1)
            assert not client.got.of_type("Transcript")
