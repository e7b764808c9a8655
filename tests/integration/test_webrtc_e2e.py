"""WebRTC end to end: a real aiortc client peer -> the real orchestrator (uvicorn, session
layer, router) -> a real tone worker found in a real Redis -> Opus audio back on the TTS
track, protocol messages on the `control` data channel. All traffic on 127.0.0.1.

The tone voice says 60 ms per character, so an utterance's length is known (`tone_frames`).
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import psutil
import pytest
import websockets
from duplex.orchestrator.app import OrchestratorServer, Runtime
from duplex.worker.app import WorkerApp

from tests.integration.orchestrator_fixtures import (
    orch_config,
    running_orchestrator,
    tone_frames,
    wait_for_workers,
)
from tests.integration.rtc_client import DEADLINE_S, RtcClient, http
from tests.integration.worker_fixtures import running_worker, worker_config

TEXT = "Hello there, my friend."
CYCLES = 200


class Stack:
    def __init__(self, server: OrchestratorServer, worker: WorkerApp) -> None:
        self.server = server
        self.worker = worker

    @property
    def url(self) -> str:
        return self.server.http_url

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.server.app.state.runtime
        return runtime

    def leftovers(self) -> dict[str, int]:
        """What a finished session could leave behind, each of which must be 0."""
        runtime = self.runtime
        assert runtime.webrtc is not None
        return {
            "peers": runtime.webrtc.active_peers,
            "connections": runtime.hub.active,
            "routed": sum(runtime.router.inflight().values()),
            "worker_streams": self.worker.servicer.active_sessions(),
        }

    async def wait_clean(self, limit_s: float = 10.0) -> None:
        async with asyncio.timeout(limit_s):
            while True:
                if not any(self.leftovers().values()):
                    return
                await asyncio.sleep(0.02)


@pytest.fixture
async def stack(redis_url: str) -> AsyncIterator[Stack]:
    """One tone worker and an orchestrator whose ICE offers 127.0.0.1 only."""
    config = orch_config(redis_url)
    rtc = replace(config.transport.webrtc, host_addresses=("127.0.0.1",), connect_timeout_s=5.0)
    config = replace(config, transport=replace(config.transport, webrtc=rtc))
    async with (
        running_worker(worker_config(redis_url, name="w1")) as worker,
        running_orchestrator(config) as server,
    ):
        await wait_for_workers(server, {"w1"})
        yield Stack(server, worker.app)


async def start(client: RtcClient, **fields: Any) -> dict[str, Any]:
    await client.send({"type": "SessionStart", "model_id": "tone-fast", **fields})
    await client.wait_for(lambda c: c.of_type("SessionStarted") or c.of_type("Error"))
    reply = (client.of_type("SessionStarted") or client.of_type("Error"))[0]
    assert reply["type"] == "SessionStarted", reply
    return reply


async def say(client: RtcClient, text: str) -> int:
    """One final TextChunk; waits for its AudioEnd; returns the index of the first frame
    received after it was sent."""
    index = len(client.of_type("AudioEnd"))
    first = len(client.got.audio)
    await client.send({"type": "TextChunk", "text": text, "is_final": True})
    await client.wait_for(lambda c: len(c.of_type("AudioEnd")) > index)
    return first


async def test_tts_audio_arrives_over_webrtc_with_session_started_and_audio_end(
    stack: Stack,
) -> None:
    async with RtcClient(stack.url) as client:
        await client.connect()
        started = await start(client)
        assert started["worker"] == "w1" and started["session_id"]
        first = await say(client, TEXT)
        assert client.of_type("AudioEnd") == [{"type": "AudioEnd", "utterance": 0}]
        # The tail of the utterance may still be in the jitter buffer at AudioEnd.
        await client.wait_for(lambda c: len(c.got.audio) - first >= tone_frames(TEXT))
        assert client.got.peak(first) > 1000
        assert stack.runtime.hub.find(started["session_id"]) is not None


async def test_whip_post_201_and_delete_ends_the_session_and_frees_the_worker_stream(
    stack: Stack,
) -> None:
    async with RtcClient(stack.url) as client:
        await client.connect(whip=True)
        assert client.location == f"/whip/{client.peer_id}"
        started = await start(client)
        await say(client, "One.")
        assert stack.worker.servicer.active_sessions() == 1
        assert stack.leftovers()["routed"] == 1
        reply = await client.delete()
        assert reply.status == 200
        await stack.wait_clean()
        assert stack.runtime.hub.find(started["session_id"]) is None
        assert (await client.delete()).status == 404


async def test_connects_and_disconnects_leave_no_peers_tasks_sessions_or_streams(
    stack: Stack,
) -> None:
    """CYCLES clients each connect (by /offer or WHIP, some with a mic track), start a session
    (a worker stream), and hang up (some after SessionEnd)."""
    process = psutil.Process()

    async def cycle(n: int) -> None:
        async with RtcClient(stack.url, mic=b"" if n % 3 == 0 else None) as client:
            await client.connect(whip=n % 2 == 1)
            await start(client)
            if n % 4 == 0:
                await client.send({"type": "SessionEnd"})
                await client.wait_for(lambda c: c.of_type("SessionEnded"))

    for n in range(10):  # warm: codecs, first-use allocations, the allocator's pools
        await cycle(n)
    await stack.wait_clean()
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    rss_before = process.memory_info().rss
    for n in range(1, CYCLES + 1):
        await cycle(n)
    await stack.wait_clean(limit_s=30)
    gc.collect()
    async with asyncio.timeout(10):
        while True:  # the last clients' tasks end a little after their peer is gone
            if len(asyncio.all_tasks()) <= tasks_before:
                break
            await asyncio.sleep(0.05)
    rss_after = process.memory_info().rss
    print(
        f"\n{CYCLES} WebRTC connect/disconnect cycles: RSS {rss_before / 2**20:.1f} MiB -> "
        f"{rss_after / 2**20:.1f} MiB ({(rss_after - rss_before) / 2**20:+.1f} MiB)"
    )
    assert stack.leftovers() == {"peers": 0, "connections": 0, "routed": 0, "worker_streams": 0}


# ---------------------------------------------------------------- bad input


async def test_malformed_sdp_no_audio_and_wrong_content_type_get_clear_4xx(
    stack: Stack,
) -> None:
    garbage = json.dumps({"sdp": "v=0\r\nnot sdp at all", "type": "offer"}).encode()
    reply = await http("POST", stack.url + "/offer", garbage, {"Content-Type": "application/json"})
    assert reply.status == 400 and reply.text.startswith("malformed SDP")

    async with RtcClient(stack.url) as client:
        client.pc.createDataChannel("control")  # no audio m-line
        await client.pc.setLocalDescription(await client.pc.createOffer())
        no_audio = client.pc.localDescription.sdp.encode()
    reply = await http("POST", stack.url + "/whip", no_audio, {"Content-Type": "application/sdp"})
    assert (reply.status, reply.text.strip()) == (400, "offer has no audio")

    async with RtcClient(stack.url) as client:
        sdp = (await client.offer_sdp()).encode()
    reply = await http("POST", stack.url + "/whip", sdp, {"Content-Type": "text/plain"})
    assert reply.status == 415 and "application/sdp" in reply.text

    assert stack.leftovers()["peers"] == 0
    ready = await http("GET", stack.url + "/health")
    assert ready.status == 200


async def test_non_json_text_and_a_megabyte_of_binary_get_errors_and_the_session_goes_on(
    stack: Stack,
) -> None:
    async with RtcClient(stack.url) as client:
        await client.connect()
        await start(client)
        client.send_raw("this is not json {")
        await client.wait_for(lambda c: len(c.of_type("Error")) == 1)
        client.send_raw(np.random.default_rng(6).bytes(1 << 20), ignore_size_limit=True)
        await client.wait_for(lambda c: len(c.of_type("Error")) == 2)
        errors = client.of_type("Error")
        assert [e["code"] for e in errors] == ["INVALID_MESSAGE", "INVALID_MESSAGE"]
        assert "JSON" in errors[0]["message"] and "mic track" in errors[1]["message"]
        first = await say(client, "Still here.")
        await client.wait_for(lambda c: c.got.peak(first) > 1000)
        assert client.of_type("SessionEnded") == []


# ---------------------------------------------------------------- the agent's channel


async def test_a_backend_on_the_agents_channel_speaks_into_the_webrtc_session(
    stack: Stack,
) -> None:
    """The browser-side peer holds the audio; a backend at /sessions/{id} sends the text and
    gets the session's AudioEnd."""
    async with RtcClient(stack.url) as client:
        await client.connect()
        started = await start(client)
        url = f"{stack.server.url}/sessions/{started['session_id']}"
        async with websockets.connect(url, proxy=None, open_timeout=DEADLINE_S) as backend:
            first = len(client.got.audio)
            await backend.send(json.dumps({"type": "TextChunk", "text": TEXT, "is_final": True}))
            async with asyncio.timeout(DEADLINE_S):
                while True:
                    message = json.loads(await backend.recv())
                    if message["type"] == "AudioEnd":
                        break
            await client.wait_for(lambda c: c.of_type("AudioEnd"))
            await client.wait_for(lambda c: c.got.peak(first) > 1000)
