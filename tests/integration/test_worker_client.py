"""The orchestrator's worker client against a real in-process worker on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from duplex.audio.frames import PcmFrame
from duplex.workerclient import (
    UnknownModelError,
    UnknownSessionError,
    WorkerClient,
    WorkerClients,
    WorkerCommand,
    WorkerError,
    WorkerUnavailable,
    WorkerUtteranceEnd,
)

from tests.integration.orchestrator_fixtures import free_port
from tests.integration.worker_fixtures import RunningWorker, running_worker, worker_config

TEXT = "Hello there, my friend. How are you?"


@pytest.fixture
async def worker(redis_url: str) -> AsyncIterator[RunningWorker]:
    async with running_worker(worker_config(redis_url, name="wc", drain_grace_s=0.2)) as w:
        yield w


@pytest.fixture
async def client(worker: RunningWorker) -> AsyncIterator[WorkerClient]:
    c = WorkerClient(f"grpc://{worker.target}")
    yield c
    await c.close()


async def test_a_stream_gives_typed_frames_and_an_utterance_end(client: WorkerClient) -> None:
    """Exact 20 ms frames at the asked rate, contiguous, positions in the text, then the end."""
    stream = await client.open_stream("s1", "tone-fast", 24000, "en", 0, timeout_s=5)
    assert stream.opened.model_id == "tone-fast" and stream.opened.sample_rate == 24000
    await stream.send_text(TEXT, is_final=True)
    events = []
    async with asyncio.timeout(10):
        async for event in stream.events():
            events.append(event)
            if isinstance(event, WorkerUtteranceEnd):
                break
    await stream.close()
    frames = [e for e in events if isinstance(e, PcmFrame)]
    end = events[-1]
    assert isinstance(end, WorkerUtteranceEnd)
    assert {len(f.pcm) for f in frames} == {960}
    assert {f.sample_rate for f in frames} == {24000}
    assert end.text_length == end.voiced_length == len(TEXT) and not end.stopped
    assert end.frames == len(frames)
    spans = [f.span for f in frames if f.span is not None]
    assert len(spans) == len(frames) and {s.utterance for s in spans} == {0}
    clause_ends = [s.end for s in spans if s.clause_end]
    assert clause_ends[-1] == len(TEXT) and clause_ends == sorted(clause_ends)


async def test_an_unknown_model_raises_unknown_model_error(client: WorkerClient) -> None:
    """NOT_FOUND becomes UnknownModelError, with the worker's list of known models."""
    with pytest.raises(UnknownModelError) as info:
        await client.open_stream("s2", "no-such-model", 48000, "en", 0, timeout_s=5)
    assert "tone-fast" in info.value.message


async def test_nobody_listening_is_worker_unavailable() -> None:
    """A dead address fails fast as WorkerUnavailable, not a hang."""
    client = WorkerClient(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(WorkerUnavailable):
            await client.open_stream("s3", None, 48000, "en", 0, timeout_s=3)
        with pytest.raises(WorkerUnavailable):
            await client.list_models(timeout_s=3)
    finally:
        await client.close()


async def test_control_reaches_the_session_and_unknown_ids_are_refused(
    client: WorkerClient,
) -> None:
    """PAUSE/RESUME/STOP answer the worker's state; an unknown session is UnknownSessionError."""
    stream = await client.open_stream("s4", "tone-fast", 48000, "en", 100, timeout_s=5)
    await stream.send_text(TEXT, is_final=True)
    assert await client.control("s4", WorkerCommand.PAUSE) == "paused"
    assert await client.control("s4", WorkerCommand.RESUME) == "speaking"
    assert await client.control("s4", WorkerCommand.STOP) == "idle"
    async with asyncio.timeout(10):
        async for event in stream.events():
            if isinstance(event, WorkerUtteranceEnd):
                assert event.stopped
                break
    await stream.close()
    with pytest.raises(UnknownSessionError):
        await client.control("nobody", WorkerCommand.STOP)


async def test_models_capabilities_and_load(client: WorkerClient) -> None:
    """ListModels, GetCapabilities and LoadModel come back as typed values."""
    models = await client.list_models()
    assert models.default_model_id == "tone-fast"
    assert {m.model_id for m in models.models} == {"tone-fast", "tone-rt02"}
    info = await client.capabilities()
    assert info.worker_name == "wc" and info.adapter_type == "tone"
    assert info.max_text_chars == 2000 and 48000 in info.sample_rates
    assert await client.info() == info
    loaded = await client.load_model("tone-rt02")
    assert loaded.model.resident and loaded.model.model_id == "tone-rt02"


async def test_next_event_times_out_without_breaking_the_stream(client: WorkerClient) -> None:
    """A read deadline does not cancel the RPC: the stream keeps working afterwards."""
    stream = await client.open_stream("s5", "tone-fast", 48000, "en", 0, timeout_s=5)
    with pytest.raises(TimeoutError):
        await stream.next_event(0.1)
    await stream.send_text("Still alive.", is_final=True)
    event = await stream.next_event(5)
    assert isinstance(event, PcmFrame)
    await stream.close()


async def test_a_worker_going_away_fails_the_stream(redis_url: str) -> None:
    """The worker stops mid-session: the stream raises a WorkerError instead of hanging."""
    async with running_worker(worker_config(redis_url, name="gone", drain_grace_s=0.1)) as w:
        client = WorkerClient(w.target)
        stream = await client.open_stream("s6", "tone-fast", 48000, "en", 100, timeout_s=5)
        await stream.send_text("A long text that is still being spoken. " * 3, is_final=False)
        await w.app.drain_and_stop()
        with pytest.raises(WorkerError):
            async with asyncio.timeout(10):
                while await stream.next_event(5) is not None:
                    pass
        with pytest.raises(WorkerError):
            await stream.send_text("more", is_final=True)
        await stream.close()
        await client.close()


async def test_closing_a_stream_ends_the_session_on_the_worker(
    worker: RunningWorker, client: WorkerClient
) -> None:
    """close() cancels the RPC; the worker drops the session."""
    stream = await client.open_stream("s7", "tone-fast", 48000, "en", 0, timeout_s=5)
    assert worker.app.servicer.active_sessions() == 1
    await stream.close()
    await stream.close()
    async with asyncio.timeout(5):
        while True:  # the worker has no event for this; poll
            if worker.app.servicer.active_sessions() == 0:
                break
            await asyncio.sleep(0.01)


async def test_clients_are_cached_by_address(worker: RunningWorker) -> None:
    """One channel per worker address, with or without the grpc:// prefix."""
    clients = WorkerClients()
    a = clients.get(f"grpc://{worker.target}")
    assert clients.get(worker.target) is a
    await clients.retain([])
    assert clients.get(worker.target) is not a
    await clients.close_all()


async def test_unload_releases_a_resident_model_and_names_unknown_ones(
    client: WorkerClient,
) -> None:
    """UnloadModel after LoadModel: the model is no longer resident; an unknown id is
    UnknownModelError."""
    await client.load_model("tone-rt02")
    assert await client.unload_model("tone-rt02") == "tone-rt02"
    models = await client.list_models()
    assert not next(m for m in models.models if m.model_id == "tone-rt02").resident
    with pytest.raises(UnknownModelError):
        await client.unload_model("no-such-model")
