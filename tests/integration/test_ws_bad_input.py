"""Every bad input of issue 3 gets its own Error code, and the server keeps serving others.

A real uvicorn on a free port, a real `websockets` client and a real redis-server. Each test
keeps a second, well-behaved connection open across the bad one and checks that it is still
answered afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import OrchestratorConfig
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.worker_fixtures import running_worker, worker_config

DEADLINE_S = 10.0
MAX_MESSAGE_BYTES = OrchestratorConfig().transport.websocket.max_message_bytes
IDLE_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 4


def make_config(redis_url: str, max_text_chars: int = 5000) -> OrchestratorConfig:
    base = OrchestratorConfig()
    ws = replace(
        base.transport.websocket,
        host="127.0.0.1",
        port=0,
        idle_timeout_s=IDLE_TIMEOUT_S,
        max_connections=MAX_CONNECTIONS,
    )
    return replace(
        base,
        transport=replace(base.transport, websocket=ws),
        session=replace(base.session, max_text_chars=max_text_chars),
        redis=replace(base.redis, url=redis_url, reconcile_interval_ms=200),
    )


@pytest.fixture
async def server(redis_url: str) -> AsyncIterator[OrchestratorServer]:
    async with OrchestratorServer(make_config(redis_url)) as orchestrator:
        yield orchestrator


def client(server: OrchestratorServer) -> Any:
    return connect(server.url, proxy=None, open_timeout=DEADLINE_S, max_size=None)


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), DEADLINE_S)
    assert isinstance(raw, str), f"expected a JSON text message, got {len(raw)} bytes"
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


async def expect_error(ws: ClientConnection, message: str | bytes, code: str) -> str:
    """Send `message`, expect `Error {code}`; returns the error's message text."""
    await ws.send(message)
    reply = await recv_json(ws)
    assert reply["type"] == "Error", reply
    assert reply["code"] == code, reply
    assert isinstance(reply["message"], str) and reply["message"]
    return reply["message"]


async def assert_still_serving(ws: ClientConnection) -> None:
    """The bystander connection still gets a protocol answer."""
    await expect_error(ws, json.dumps({"type": "TextChunk", "text": "hi"}), "NOT_STARTED")


async def test_non_json_text_is_invalid_message_and_the_connection_stays(
    server: OrchestratorServer,
) -> None:
    """Non-JSON text gets Error INVALID_MESSAGE; the same connection keeps working."""
    async with client(server) as bystander, client(server) as ws:
        await expect_error(ws, "hello there", "INVALID_MESSAGE")
        await expect_error(ws, "{not json", "INVALID_MESSAGE")
        await assert_still_serving(ws)
        await assert_still_serving(bystander)


async def test_unknown_type_is_invalid_message_naming_known_types(
    server: OrchestratorServer,
) -> None:
    """JSON of an unknown type gets INVALID_MESSAGE listing the known types."""
    async with client(server) as bystander, client(server) as ws:
        text = await expect_error(ws, json.dumps({"type": "Synthesize"}), "INVALID_MESSAGE")
        assert "SessionStart" in text and "TextChunk" in text
        await assert_still_serving(bystander)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "TextChunk", "is_final": True}, "text"),
        ({"type": "TextChunk", "text": ["a"]}, "text"),
        ({"type": "SessionStart", "language": 7}, "language"),
        ({"type": "SessionStart", "sample_rate": "48000"}, "sample_rate"),
        ({"type": "Control", "command": "REWIND"}, "REWIND"),
    ],
)
async def test_missing_or_ill_typed_fields_are_invalid_message_naming_the_field(
    server: OrchestratorServer, message: dict[str, Any], field: str
) -> None:
    """A missing or ill-typed field gets INVALID_MESSAGE that names it."""
    async with client(server) as bystander, client(server) as ws:
        text = await expect_error(ws, json.dumps(message), "INVALID_MESSAGE")
        assert field in text
        await assert_still_serving(bystander)


async def test_text_and_control_before_session_start_are_not_started(
    server: OrchestratorServer,
) -> None:
    """TextChunk or Control before SessionStart gets NOT_STARTED; the connection stays."""
    async with client(server) as ws:
        await expect_error(ws, json.dumps({"type": "TextChunk", "text": "hi"}), "NOT_STARTED")
        await expect_error(ws, json.dumps({"type": "Control", "command": "PAUSE"}), "NOT_STARTED")
        await expect_error(ws, "{", "INVALID_MESSAGE")  # still reading


async def test_binary_before_session_start_is_not_started(server: OrchestratorServer) -> None:
    """A binary message before SessionStart gets NOT_STARTED."""
    async with client(server) as bystander, client(server) as ws:
        await expect_error(ws, b"\x00\x01" * 480, "NOT_STARTED")
        await expect_error(ws, b"\x00\x01" * 480, "NOT_STARTED")
        await assert_still_serving(bystander)


async def test_message_over_the_size_limit_is_message_too_large_then_closed_1009(
    server: OrchestratorServer,
) -> None:
    """A message over the default size limit gets Error MESSAGE_TOO_LARGE, then a 1009 close."""
    big = json.dumps({"type": "TextChunk", "text": "x" * MAX_MESSAGE_BYTES})
    async with client(server) as bystander, client(server) as ws:
        text = await expect_error(ws, big, "MESSAGE_TOO_LARGE")
        assert str(MAX_MESSAGE_BYTES) in text
        ended = await recv_json(ws)
        assert ended == {"type": "SessionEnded", "reason": "message_too_large"}
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), DEADLINE_S)
        assert ws.close_code == 1009
        await assert_still_serving(bystander)


async def test_binary_message_over_the_size_limit_is_message_too_large(
    server: OrchestratorServer,
) -> None:
    """An oversized binary message is refused the same way as oversized text."""
    async with client(server) as ws:
        await expect_error(ws, b"\x00" * (MAX_MESSAGE_BYTES + 2), "MESSAGE_TOO_LARGE")
        await asyncio.wait_for(ws.wait_closed(), DEADLINE_S)
        assert ws.close_code == 1009


async def test_text_over_the_length_limit_is_text_too_long(server: OrchestratorServer) -> None:
    """A TextChunk longer than max_text_chars gets TEXT_TOO_LONG; the connection stays."""
    limit = server.config.session.max_text_chars
    async with client(server) as bystander, client(server) as ws:
        text = await expect_error(
            ws, json.dumps({"type": "TextChunk", "text": "y" * (limit + 1)}), "TEXT_TOO_LONG"
        )
        assert str(limit) in text
        await assert_still_serving(ws)
        await assert_still_serving(bystander)


async def test_reference_audio_not_a_wav_or_over_its_cap_is_invalid_reference_audio(
    server: OrchestratorServer,
) -> None:
    """reference_audio that is not a WAV, not base64, or over its cap is refused."""
    cap = server.config.session.max_reference_audio_bytes
    riff = b"RIFF" + (cap + 100).to_bytes(4, "little") + b"WAVE" + b"\x00" * (cap + 100)
    cases = [
        base64.b64encode(b"this is not a wav file at all").decode(),
        "%%% not base64 %%%",
        base64.b64encode(riff).decode(),
    ]
    async with client(server) as bystander, client(server) as ws:
        for value in cases:
            start = {"type": "SessionStart", "reference_audio": value}
            await expect_error(ws, json.dumps(start), "INVALID_REFERENCE_AUDIO")
        await assert_still_serving(bystander)


async def test_sample_rate_not_allowed_is_invalid_sample_rate(server: OrchestratorServer) -> None:
    """A sample_rate outside 16000/24000/48000 gets INVALID_SAMPLE_RATE naming them."""
    async with client(server) as bystander, client(server) as ws:
        start = {"type": "SessionStart", "sample_rate": 44100}
        text = await expect_error(ws, json.dumps(start), "INVALID_SAMPLE_RATE")
        assert "16000" in text and "48000" in text
        await assert_still_serving(bystander)


async def test_connections_beyond_max_connections_get_capacity_and_close_1013(
    server: OrchestratorServer,
) -> None:
    """The connection past max_connections gets Error CAPACITY and a 1013 close; the others
    keep working, and a slot freed is usable again."""
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(client(server)) for _ in range(MAX_CONNECTIONS)]
        for ws in held:  # each is registered (answered) before the next one is tried
            await assert_still_serving(ws)
        async with client(server) as extra:
            reply = await recv_json(extra)
            assert reply["type"] == "Error" and reply["code"] == "CAPACITY"
            assert str(MAX_CONNECTIONS) in reply["message"]
            await asyncio.wait_for(extra.wait_closed(), DEADLINE_S)
            assert extra.close_code == 1013
        for ws in held:
            await assert_still_serving(ws)
        await held[0].close()
    async with client(server) as again:
        await assert_still_serving(again)


async def test_idle_connection_gets_session_ended_idle_timeout(
    server: OrchestratorServer,
) -> None:
    """No message for idle_timeout_s gets SessionEnded {reason: idle_timeout} and a close,
    while a connection that keeps talking meanwhile is kept."""
    async with client(server) as bystander, client(server) as ws:
        loop = asyncio.get_running_loop()
        started = loop.time()
        receiving = asyncio.create_task(recv_json(ws))
        while not receiving.done():  # the bystander talks every half timeout
            await assert_still_serving(bystander)
            await asyncio.wait({receiving}, timeout=IDLE_TIMEOUT_S / 3)
        waited = loop.time() - started
        assert receiving.result() == {"type": "SessionEnded", "reason": "idle_timeout"}
        await asyncio.wait_for(ws.wait_closed(), DEADLINE_S)
        assert ws.close_code == 1000
        assert waited >= IDLE_TIMEOUT_S * 0.9
        await assert_still_serving(bystander)


async def test_messages_reset_the_idle_timer(server: OrchestratorServer) -> None:
    """A client that keeps sending (even bad) messages is not idle."""
    async with client(server) as ws:
        for _ in range(4):
            await asyncio.sleep(IDLE_TIMEOUT_S / 2)
            await expect_error(ws, "{", "INVALID_MESSAGE")


async def test_session_end_before_start_ends_the_connection_cleanly(
    server: OrchestratorServer,
) -> None:
    """SessionEnd without a session gets SessionEnded {reason: client_end} and a 1000 close."""
    async with client(server) as ws:
        await ws.send(json.dumps({"type": "SessionEnd"}))
        assert await recv_json(ws) == {"type": "SessionEnded", "reason": "client_end"}
        await asyncio.wait_for(ws.wait_closed(), DEADLINE_S)
        assert ws.close_code == 1000


# ---------------------------------------------------------------- with a real (tone) worker

WORKER = "bad-input-tone"


@pytest.fixture
async def served(redis_url: str) -> AsyncIterator[OrchestratorServer]:
    """An orchestrator with one live in-process tone worker behind it."""
    async with (
        running_worker(worker_config(redis_url, name=WORKER)),
        OrchestratorServer(make_config(redis_url, max_text_chars=100)) as orchestrator,
    ):
        view = orchestrator.app.state.runtime.view
        async with asyncio.timeout(DEADLINE_S):
            while True:
                if WORKER in view.workers():
                    break
                await asyncio.sleep(0.05)
        yield orchestrator


async def start_session(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "SessionStart", "sample_rate": 16000, **fields}))
    started = await recv_json(ws)
    assert started["type"] == "SessionStarted", started
    return started


async def speak(ws: ClientConnection, text: str) -> tuple[list[bytes], dict[str, Any]]:
    """Send one final utterance; return its binary frames and the AudioEnd after them."""
    await ws.send(json.dumps({"type": "TextChunk", "text": text, "is_final": True}))
    frames: list[bytes] = []
    while True:
        message = await asyncio.wait_for(ws.recv(), DEADLINE_S)
        if isinstance(message, bytes):
            frames.append(message)
            continue
        reply = json.loads(message)
        assert reply["type"] == "AudioEnd", reply
        return frames, reply


async def test_unknown_model_id_is_unknown_model_and_others_keep_speaking(
    served: OrchestratorServer,
) -> None:
    """An unknown model_id ends that session with UNKNOWN_MODEL naming the known models,
    while a session on another connection keeps speaking."""
    async with client(served) as speaker, client(served) as ws:
        started = await start_session(speaker)
        assert started["worker"] == WORKER
        text = await expect_error(
            ws, json.dumps({"type": "SessionStart", "model_id": "no-such-model"}), "UNKNOWN_MODEL"
        )
        assert "no-such-model" in text and "tone-fast" in text
        assert await recv_json(ws) == {"type": "SessionEnded", "reason": "unknown_model"}
        await asyncio.wait_for(ws.wait_closed(), DEADLINE_S)
        registry = served.app.state.runtime.metrics.registry
        outcome = {"transport": "websocket", "outcome": "unknown_model"}
        assert registry.get_sample_value("duplex_orch_sessions_total", outcome) == 1
        frames, end = await speak(speaker, "Still here.")
        assert frames and all(len(f) == 640 for f in frames)  # 20 ms at 16 kHz, s16 mono
        assert end == {"type": "AudioEnd", "utterance": 0}


async def test_garbage_during_a_live_session_does_not_disturb_it(
    served: OrchestratorServer,
) -> None:
    """Bad input on one connection while another session speaks: the speaker still gets every
    frame of its utterance and its AudioEnd; the bad connection gets its errors."""
    async with client(served) as speaker, client(served) as ws:
        await start_session(speaker)
        speaking = asyncio.create_task(speak(speaker, "A sentence long enough to take a while."))
        await expect_error(ws, "garbage", "INVALID_MESSAGE")
        await expect_error(ws, b"\x00" * 640, "NOT_STARTED")
        await expect_error(ws, json.dumps({"type": "SessionStart", "sample_rate": 8000}),
                           "INVALID_SAMPLE_RATE")  # fmt: skip
        frames, end = await speaking
        # The tone voice speaks 60 ms per character: the whole utterance arrived.
        assert len(frames) * 20 >= 60 * len("A sentence long enough to take a while.") - 20
        assert end["utterance"] == 0


async def test_misuse_after_start_gets_errors_and_the_session_goes_on(
    served: OrchestratorServer,
) -> None:
    """A second SessionStart, mic audio of the wrong size, and an over-long utterance (100
    characters here) are refused without ending the session; it then speaks normally."""
    async with client(served) as ws:
        await start_session(ws)
        await expect_error(ws, json.dumps({"type": "SessionStart"}), "ALREADY_STARTED")
        await ws.send(b"\x00" * 640)  # 20 ms of silent mic audio at 16 kHz: taken
        text = await expect_error(ws, b"\x00" * 1000, "INVALID_AUDIO")
        assert "640 bytes" in text and "1000 bytes" in text
        limit = served.config.session.max_text_chars
        chunk = {"type": "TextChunk", "text": "z" * (limit // 2 + 1), "is_final": False}
        await ws.send(json.dumps(chunk))  # accepted: half the limit
        await expect_error(ws, json.dumps(chunk), "TEXT_TOO_LONG")  # the sum is over it
        await ws.send(json.dumps({"type": "Control", "command": "STOP"}))
        assert await recv_json(ws) == {"type": "AudioEnd", "utterance": 0}  # the stopped one
        frames, end = await speak(ws, "Done.")
        assert frames and end == {"type": "AudioEnd", "utterance": 1}
        await ws.send(json.dumps({"type": "SessionEnd"}))
        assert await recv_json(ws) == {"type": "SessionEnded", "reason": "client_end"}
        await asyncio.wait_for(ws.wait_closed(), DEADLINE_S)
        assert ws.close_code == 1000


async def test_a_session_speaking_longer_than_the_idle_timeout_is_not_idle(
    served: OrchestratorServer,
) -> None:
    """While audio is still being sent the session is not idle; once it is quiet for
    idle_timeout_s it ends with SessionEnded idle_timeout."""
    text = "x" * 40  # 2.4 s of tone, over twice the 1 s idle timeout
    async with client(served) as ws:
        await start_session(ws)
        frames, _ = await speak(ws, text)
        assert len(frames) * 20 >= 60 * len(text) - 20
        assert await recv_json(ws) == {"type": "SessionEnded", "reason": "idle_timeout"}


async def test_client_gone_mid_utterance_frees_its_slot_and_session(
    served: OrchestratorServer,
) -> None:
    """A client that disconnects while audio is streaming is cleaned up at once: its
    connection slot and its active-session count are released."""
    runtime = served.app.state.runtime
    async with client(served) as ws:
        await start_session(ws)
        await ws.send(json.dumps({"type": "TextChunk", "text": "x" * 60, "is_final": True}))
        assert isinstance(await asyncio.wait_for(ws.recv(), DEADLINE_S), bytes)
    async with asyncio.timeout(DEADLINE_S):
        while True:
            if runtime.hub.active == 0:
                break
            await asyncio.sleep(0.02)
    registry = runtime.metrics.registry
    ws_label = {"transport": "websocket"}
    assert registry.get_sample_value("duplex_orch_sessions_active", ws_label) == 0
    outcome = {**ws_label, "outcome": "disconnected"}
    assert registry.get_sample_value("duplex_orch_sessions_total", outcome) == 1
