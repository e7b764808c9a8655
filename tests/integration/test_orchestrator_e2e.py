"""The whole path: a real websockets client -> a real orchestrator (uvicorn) -> real workers
found in a real Redis -> audio back, paced, with AudioEnd per utterance.

The tone voice is 60 ms of audio per character of each clause, so the number of frames an
utterance must give is known exactly (`tone_frames`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from duplex.orchestrator.app import OrchestratorServer

from tests.integration.orchestrator_fixtures import (
    DEADLINE_S,
    Client,
    orch_config,
    running_orchestrator,
    tone_frames,
    wait_for_workers,
)
from tests.integration.worker_fixtures import running_worker, worker_config

TEXT = "Hello there, my friend. How are you?"


@pytest.fixture
async def orch(redis_url: str) -> AsyncIterator[OrchestratorServer]:
    """One tone worker and an orchestrator that sees it."""
    async with (
        running_worker(worker_config(redis_url, name="w1")),
        running_orchestrator(orch_config(redis_url)) as server,
    ):
        await wait_for_workers(server, {"w1"})
        yield server


async def guide_snippet(url: str, model_id: str, text: str) -> dict[str, Any]:
    """The deployment guide's client, unchanged but for the URL (and returning what it got)."""
    async with websockets.connect(url) as ws:
        # Start session with specific model
        await ws.send(
            json.dumps(
                {
                    "type": "SessionStart",
                    "model_id": model_id,  # "cosyvoice2-en-base" or "xtts-v2-en-demo"
                    "sample_rate": 48000,
                    "language": "en",
                }
            )
        )

        response = json.loads(await ws.recv())
        print(f"Session started: {response['session_id']}")

        # Send text
        await ws.send(json.dumps({"type": "TextChunk", "text": text, "is_final": True}))

        # Receive audio frames...
        frames: list[bytes] = []
        async with asyncio.timeout(DEADLINE_S):
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    frames.append(message)
                    continue
                end = json.loads(message)
                break
        return {"started": response, "frames": frames, "end": end}


async def test_the_guides_client_snippet_gets_20ms_frames_then_audio_end(
    orch: OrchestratorServer,
) -> None:
    """SessionStarted with a session_id, 1920-byte frames at 48 kHz, then AudioEnd 0."""
    got = await guide_snippet(orch.url, "tone-fast", TEXT)
    started = got["started"]
    assert started["type"] == "SessionStarted"
    assert started["session_id"] and started["worker"] == "w1"
    assert started["model_id"] == "tone-fast" and started["sample_rate"] == 48000
    assert {len(f) for f in got["frames"]} == {1920}
    assert len(got["frames"]) == tone_frames(TEXT)
    assert got["end"] == {"type": "AudioEnd", "utterance": 0}


async def test_a_session_at_speed_two_gets_its_audio_in_about_half_the_frames(
    orch: OrchestratorServer,
) -> None:
    """SessionStart.speed reaches the worker: the tone voice at 2.0 lasts about half as long."""
    text = "One, two, three, four."
    async with Client(orch) as client:
        reply = await client.start(model_id="tone-fast", speed=2.0)
        assert reply["type"] == "SessionStarted", reply
        fast = await client.say(text)
    normal = tone_frames(text)
    print(f"speed 2.0: {len(fast.frames)} frames against {normal} at 1.0")
    assert len(fast.frames) <= normal * 0.6


async def test_several_utterances_in_one_session_each_end_with_audio_end(
    orch: OrchestratorServer,
) -> None:
    """Three utterances: AudioEnd 0, 1, 2, each after exactly its own audio."""
    texts = ["One, two, three.", "Four and five.", "Six."]
    async with Client(orch) as client:
        await client.start(model_id="tone-fast")
        for text in texts:
            await client.text(text, is_final=True)
        await client.wait_for(lambda got: got.audio_ends() == [0, 1, 2])
        assert [client.got.utterance(i).duration_ms for i in range(3)] == [
            tone_frames(t) * 20 for t in texts
        ]
        assert client.got.frame_sizes == {1920}


async def test_word_by_word_text_is_spoken_before_is_final(orch: OrchestratorServer) -> None:
    """Words as a language model emits them: the first frame comes before is_final is sent."""
    words = [
        "Hello",
        "there,",
        "my",
        "friend.",
        "This",
        "answer",
        "is",
        "still",
        "being",
        "written",
    ]
    async with Client(orch) as client:
        await client.start(model_id="tone-fast")
        for word in words:
            await client.text(word + " ")
            await asyncio.sleep(0.02)
        await client.wait_for(lambda got: bool(got.utterance(0).frames))
        assert client.got.audio_ends() == []
        await client.text("", is_final=True)
        await client.wait_for(lambda got: got.audio_ends() == [0])
        full = " ".join(words) + " "
        assert client.got.utterance(0).duration_ms == tone_frames(full) * 20


async def test_audio_is_paced_at_real_time(orch: OrchestratorServer) -> None:
    """An utterance of N frames takes about N x 20 ms to arrive (minus the lead), not less."""
    async with Client(orch) as client:
        await client.start(model_id="tone-fast")
        utt = await client.say(TEXT)
        assert utt.first_frame_at is not None and utt.ended_at is not None
        span = utt.ended_at - utt.first_frame_at
        audio_s = utt.duration_ms / 1000
        assert span >= audio_s - 0.06 - 0.05  # the 60 ms output lead, and clock slack
        assert span < audio_s * 1.5 + 0.5


async def test_other_sample_rates_give_frames_of_that_rate(orch: OrchestratorServer) -> None:
    """16 kHz: 640-byte frames."""
    async with Client(orch) as client:
        started = await client.start(model_id="tone-fast", sample_rate=16000)
        assert started["sample_rate"] == 16000
        await client.say("Short one.")
        assert client.got.frame_sizes == {640}


async def test_pause_holds_the_audio_and_resume_finishes_it(orch: OrchestratorServer) -> None:
    """PAUSE: the frames stop at once (network slack aside); RESUME: the rest, nothing lost."""
    async with Client(orch) as client:
        await client.start(model_id="tone-fast")
        await client.text(TEXT, is_final=True)
        await client.wait_for(lambda got: len(got.utterance(0).frames) >= 10)
        await client.control("PAUSE")
        await asyncio.sleep(0.1)
        held = len(client.got.utterance(0).frames)
        await asyncio.sleep(0.4)
        assert len(client.got.utterance(0).frames) == held
        await client.control("RESUME")
        await client.wait_for(lambda got: got.audio_ends() == [0])
        assert len(client.got.utterance(0).frames) == tone_frames(TEXT)


async def test_stop_ends_the_utterance_at_once_and_the_session_goes_on(
    orch: OrchestratorServer,
) -> None:
    """STOP: AudioEnd within a moment, far less audio than the text; then a new utterance."""
    long_text = "This is a long answer, with many clauses, that nobody wants to hear out. " * 3
    async with Client(orch) as client:
        await client.start(model_id="tone-fast")
        await client.text(long_text, is_final=True)
        await client.wait_for(lambda got: len(got.utterance(0).frames) >= 5)
        stopped_at = time.monotonic()
        await client.control("STOP")
        await client.wait_for(lambda got: got.audio_ends() == [0])
        assert time.monotonic() - stopped_at < 1.0
        assert len(client.got.utterance(0).frames) < tone_frames(long_text) // 4
        utt = await client.say("And now this.")
        assert utt.duration_ms == tone_frames("And now this.") * 20
        assert client.got.audio_ends() == [0, 1]


async def test_clients_leaving_mid_audio_leave_no_session_behind(redis_url: str) -> None:
    """Disconnect while frames flow: the session, its worker stream and its tasks all end."""
    async with (
        running_worker(worker_config(redis_url, name="w1")) as worker,
        running_orchestrator(orch_config(redis_url)) as orch,
    ):
        await wait_for_workers(orch, {"w1"})
        for _ in range(5):
            async with Client(orch) as client:
                await client.start(model_id="tone-fast")
                await client.text(TEXT, is_final=True)
                await client.wait_for(lambda got: len(got.utterance(0).frames) >= 3)
        hub = orch.app.state.runtime.hub
        async with asyncio.timeout(5):
            while True:  # nothing to await on: poll
                if not (hub.active or worker.app.servicer.active_sessions()):
                    break
                await asyncio.sleep(0.02)
        leftovers = [t.get_name() for t in asyncio.all_tasks() if ":" in t.get_name()]
        assert not [n for n in leftovers if n.startswith(("pacer:", "session-receiver:"))]


async def test_metrics_count_frames_and_first_audio(orch: OrchestratorServer) -> None:
    """GET /metrics reflects the session: frames sent, first-audio latency, a routing decision."""
    async with Client(orch) as client:
        await client.start(model_id="tone-fast")
        utt = await client.say("Count me.")
    body = await asyncio.to_thread(_get, orch.http_url + "/metrics")
    values = _samples(body)
    assert values["duplex_orch_frames_sent_total"] >= len(utt.frames)
    assert values["duplex_orch_first_audio_seconds_count"] == 1
    assert values["duplex_orch_frame_send_lateness_seconds_count"] >= len(utt.frames)
    key = 'duplex_orch_routing_decisions_total{strategy="least_loaded",worker="w1"}'
    assert values[key] == 1


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _samples(body: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
