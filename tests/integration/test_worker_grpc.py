"""The worker over real gRPC (in-process server on port 0) with the real Piper voice and a
real redis-server: streaming, pacing, control, models, bad input, health and drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from duplex.gen.tts.v1 import tts_pb2
from duplex.worker.catalog import Catalog, ModelSpec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.worker_fixtures import (
    LiveStream,
    Received,
    RunningWorker,
    open_request,
    piper_config,
    running_worker,
    session_tasks,
    synthesize,
    text_request,
    worker_config,
)

MULTI = (
    "Good morning, everyone. The weekly meeting starts in the small room. "
    "Please bring your notes and a pen. We will talk about the new schedule. "
    "Lunch is served after the meeting, in the kitchen."
)
SHORT = "Session b keeps talking, and it finishes every word."
LONG = " ".join(["This sentence is long enough to keep the voice busy for a while."] * 4)


@pytest.fixture
async def piper(redis_url: str) -> AsyncIterator[RunningWorker]:
    async with running_worker(piper_config(redis_url)) as worker:
        yield worker


@pytest.fixture
async def tone(redis_url: str) -> AsyncIterator[RunningWorker]:
    async with running_worker(worker_config(redis_url, max_text_chars=200)) as worker:
        yield worker


def _assert_well_formed(got: Received, rate: int, text: str) -> None:
    frame_len = rate * 20 // 1000 * 2
    assert got.frames, "no audio"
    assert all(len(f.pcm) == frame_len and f.sample_rate == rate for f in got.frames)
    assert [f.sequence for f in got.frames] == list(range(len(got.frames)))
    assert len(got.ends) == 1
    end = got.ends[0]
    assert (end.utterance, end.stopped) == (0, False)
    assert end.text_length == end.voiced_length == len(text)
    assert end.frames == len(got.frames)
    assert got.frames[-1].clause_end and got.frames[-1].text_end == len(text)


# -- streaming -----------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "frame_bytes"), [(48000, 1920), (16000, 640)])
async def test_piper_frames_are_20ms_at_the_requested_rate_and_contiguous(
    piper: RunningWorker, rate: int, frame_bytes: int
) -> None:
    """Every frame is exactly 20 ms at the requested rate; sequence 0..n-1; one utterance end."""
    got = await synthesize(piper.stub, MULTI, sample_rate=rate)
    assert got.opened.sample_rate == rate and got.opened.frame_duration_ms == 20
    assert len(got.frames[0].pcm) == frame_bytes
    _assert_well_formed(got, rate, MULTI)
    # Text positions never go back, and every clause ends on a frame.
    starts = [f.text_start for f in got.frames]
    assert starts == sorted(starts)
    assert sum(f.clause_end for f in got.frames) >= 5


async def test_first_frame_arrives_before_the_last_sentence_is_synthesized(
    piper: RunningWorker,
) -> None:
    """With lead 0 the first frame arrives well before the utterance is done."""
    started = time.monotonic()
    got = await synthesize(piper.stub, MULTI, lead_ms=0)
    first = got.frame_times[0] - started
    last_clause_start = got.frames[-1].text_start
    first_of_last = next(
        t
        for f, t in zip(got.frames, got.frame_times, strict=True)
        if f.text_start == last_clause_start
    )
    assert first < (got.end_times[0] - started) / 2
    assert got.frame_times[0] < first_of_last


async def test_pause_holds_frames_resume_continues_and_stop_ends(piper: RunningWorker) -> None:
    """Default lead: at most lead/20+1 frames after PAUSE; RESUME continues the sequence;
    STOP ends the utterance early."""
    stream = LiveStream(piper.stub)
    opened = await stream.open()  # lead_ms unset: the worker's 100 ms
    await stream.send(LONG)
    await stream.wait_for(lambda g: len(g.frames) >= 10)
    answer = await piper.stub.Control(
        tts_pb2.ControlRequest(session_id=opened.session_id, command=tts_pb2.PAUSE), timeout=5
    )
    assert answer.state == "paused"
    at_pause = len(stream.got.frames)
    await asyncio.sleep(0.6)
    assert len(stream.got.frames) - at_pause <= 100 // 20 + 1
    held = len(stream.got.frames)

    answer = await piper.stub.Control(
        tts_pb2.ControlRequest(session_id=opened.session_id, command=tts_pb2.RESUME), timeout=5
    )
    assert answer.state == "speaking"
    await stream.wait_for(lambda g: len(g.frames) >= held + 10)
    sequences = [f.sequence for f in stream.got.frames]
    assert sequences == list(range(len(sequences)))

    answer = await piper.stub.Control(
        tts_pb2.ControlRequest(session_id=opened.session_id, command=tts_pb2.STOP), timeout=5
    )
    assert answer.state == "idle"
    await stream.wait_for(lambda g: len(g.ends) == 1)
    end = stream.got.ends[0]
    assert end.stopped and end.text_length == len(LONG)
    assert end.voiced_length < len(LONG)
    assert end.frames == len(stream.got.frames)
    got = await stream.finish()
    assert stream.error is None and len(got.ends) == 1


async def test_stop_in_one_session_leaves_a_concurrent_one_intact(piper: RunningWorker) -> None:
    """Two sessions on the one shared model: STOP in A, B still says its whole utterance."""
    a, b = LiveStream(piper.stub), LiveStream(piper.stub)
    opened_a = await a.open()
    await b.open()
    await a.send(LONG)
    await b.send(SHORT)
    await a.wait_for(lambda g: len(g.frames) >= 5)
    await b.wait_for(lambda g: len(g.frames) >= 5)
    await piper.stub.Control(
        tts_pb2.ControlRequest(session_id=opened_a.session_id, command=tts_pb2.STOP), timeout=5
    )
    got_a = await a.finish()
    got_b = await b.finish()
    assert got_a.ends[0].stopped
    _assert_well_formed(got_b, 48000, SHORT)
    assert piper.app.models.refcount("piper-en-joe-medium") == 0


async def test_the_default_lead_paces_frames_near_real_time(tone: RunningWorker) -> None:
    """With the default 100 ms lead, 1.2 s of audio is not sent in one burst."""
    started = time.monotonic()
    got = await synthesize(tone.stub, "Twenty chars here ok", lead_ms=None)  # 1.2 s of tone
    assert len(got.frames) == 60
    assert got.end_times[0] - started >= 1.2 - 0.1 - 0.05


# -- models through the RPCs -----------------------------------------------------------------


def _tone_catalog() -> Catalog:
    return Catalog(
        ModelSpec(f"tone-{c}", "tone", ("en",), ("streaming",), 24000, f"tone {c}", {"rtf": "0"})
        for c in "abc"
    )


async def _code(coro: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    code: grpc.StatusCode = info.value.code()
    return code


async def test_model_rpcs_enforce_the_cap_lru_and_references(redis_url: str) -> None:
    """LoadModel/UnloadModel/ListModels: cap with busy models is RESOURCE_EXHAUSTED, an idle
    one is evicted LRU, a model in use cannot be unloaded, unknown ids are NOT_FOUND."""
    config = worker_config(redis_url, default_model_id="tone-a", resident_cap=2)
    async with running_worker(config, catalog=_tone_catalog()) as worker:
        stub = worker.stub
        first = await stub.LoadModel(tts_pb2.LoadModelRequest(model_id="tone-b"), timeout=10)
        assert first.loaded_now and first.model.resident
        again = await stub.LoadModel(tts_pb2.LoadModelRequest(model_id="tone-b"), timeout=10)
        assert not again.loaded_now

        busy = LiveStream(stub)
        await busy.open(model_id="tone-b")
        listed = await stub.ListModels(tts_pb2.ListModelsRequest(), timeout=5)
        by_id = {m.model_id: m for m in listed.models}
        assert listed.default_model_id == "tone-a"
        assert set(by_id) == {"tone-a", "tone-b", "tone-c"}
        assert by_id["tone-b"].active_sessions == 1 and not by_id["tone-c"].resident

        load_c = stub.LoadModel(tts_pb2.LoadModelRequest(model_id="tone-c"), timeout=10)
        assert await _code(load_c) == grpc.StatusCode.RESOURCE_EXHAUSTED
        unload_b = stub.UnloadModel(tts_pb2.UnloadModelRequest(model_id="tone-b"), timeout=5)
        assert await _code(unload_b) == grpc.StatusCode.FAILED_PRECONDITION
        unload_default = stub.UnloadModel(tts_pb2.UnloadModelRequest(model_id="tone-a"), timeout=5)
        assert await _code(unload_default) == grpc.StatusCode.FAILED_PRECONDITION
        unknown = stub.LoadModel(tts_pb2.LoadModelRequest(model_id="nope"), timeout=5)
        assert await _code(unknown) == grpc.StatusCode.NOT_FOUND

        await busy.finish()
        assert worker.app.models.refcount("tone-b") == 0
        loaded_c = await stub.LoadModel(tts_pb2.LoadModelRequest(model_id="tone-c"), timeout=10)
        assert loaded_c.loaded_now  # tone-b, idle now, was evicted to make room
        listed = await stub.ListModels(tts_pb2.ListModelsRequest(), timeout=5)
        assert {m.model_id for m in listed.models if m.resident} == {"tone-a", "tone-c"}
        await stub.UnloadModel(tts_pb2.UnloadModelRequest(model_id="tone-c"), timeout=5)
        assert worker.app.models.resident() == ("tone-a",)


async def test_get_capabilities_describes_the_worker(tone: RunningWorker) -> None:
    """Name, adapter, languages, resident and available models, rates and frame size."""
    caps = await tone.stub.GetCapabilities(tts_pb2.GetCapabilitiesRequest(), timeout=5)
    assert (caps.worker_name, caps.adapter_type) == ("test-worker", "tone")
    assert caps.streaming and not caps.zero_shot
    assert list(caps.resident_models) == ["tone-fast"]
    assert set(caps.available_models) == {"tone-fast", "tone-rt02"}
    assert 48000 in caps.sample_rates and 16000 in caps.sample_rates
    assert caps.frame_duration_ms == 20 and caps.max_text_chars == 200
    assert caps.device == "cpu"


# -- bad input --------------------------------------------------------------------------------


async def _status(stub: Any, *requests: Any) -> grpc.aio.AioRpcError:
    """Send `requests` (all read by the worker before it fails) and return the error.

    Writes without half-closing: a write or half-close racing the worker's abort would
    end the call with a client-side transport error instead of the worker's status.
    """
    call = stub.Synthesize(timeout=10)
    for request in requests:
        await call.write(request)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while await call.read() is not grpc.aio.EOF:
            pass
    return info.value


async def test_an_empty_text_chunk_is_invalid_argument(tone: RunningWorker) -> None:
    """A non-final empty chunk, or a final one with no text, is INVALID_ARGUMENT."""
    error = await _status(tone.stub, open_request(), text_request("", is_final=False))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in str(error.details())
    error = await _status(tone.stub, open_request(), text_request("", is_final=True))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_text_over_the_limit_is_invalid_argument(tone: RunningWorker) -> None:
    """More than max_text_chars in one utterance is INVALID_ARGUMENT naming the limit."""
    error = await _status(tone.stub, open_request(), text_request("x" * 201))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "200" in str(error.details())


async def test_an_unknown_model_is_not_found_naming_the_known_ones(tone: RunningWorker) -> None:
    """NOT_FOUND, and the message lists this worker's model ids."""
    error = await _status(tone.stub, open_request(model_id="xtts-v2"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "tone-fast" in str(error.details()) and "tone-rt02" in str(error.details())


async def test_a_stream_must_start_with_open(tone: RunningWorker) -> None:
    """Text before open, an unsupported rate, a second open: INVALID_ARGUMENT."""
    error = await _status(tone.stub, text_request("Hi."))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await _status(tone.stub, open_request(sample_rate=11025))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "11025" in str(error.details())
    error = await _status(tone.stub, open_request(), open_request())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_control_for_an_unknown_session_or_unspecified_command(tone: RunningWorker) -> None:
    """Unknown session: NOT_FOUND; CONTROL_COMMAND_UNSPECIFIED: INVALID_ARGUMENT."""
    unknown = tone.stub.Control(
        tts_pb2.ControlRequest(session_id="nobody", command=tts_pb2.PAUSE), timeout=5
    )
    assert await _code(unknown) == grpc.StatusCode.NOT_FOUND
    stream = LiveStream(tone.stub)
    opened = await stream.open()
    unspecified = tone.stub.Control(tts_pb2.ControlRequest(session_id=opened.session_id), timeout=5)
    assert await _code(unspecified) == grpc.StatusCode.INVALID_ARGUMENT
    await stream.finish()


async def test_a_duplicate_session_id_is_already_exists(tone: RunningWorker) -> None:
    """A client-chosen session id can be used by one live stream only."""
    stream = LiveStream(tone.stub)
    await stream.open(session_id="same")
    error = await _status(tone.stub, open_request(session_id="same"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    await stream.finish()


async def test_a_client_that_disconnects_mid_stream_is_cleaned_up(piper: RunningWorker) -> None:
    """Cancel mid-utterance: the session is gone, the lease released, no task left behind."""
    stream = LiveStream(piper.stub)
    await stream.open()
    await stream.send(LONG)
    await stream.wait_for(lambda g: len(g.frames) >= 3)
    assert piper.app.servicer.active_sessions() == 1
    assert piper.app.models.refcount("piper-en-joe-medium") == 1
    await stream.cancel()
    assert await piper.app.servicer.wait_sessions_done(5)
    assert piper.app.models.refcount("piper-en-joe-medium") == 0
    assert await session_tasks() == []
    # The worker still serves.
    got = await synthesize(piper.stub, "Still here.")
    assert got.ends and not got.ends[0].stopped


# -- health and drain ----------------------------------------------------------------------------


async def _health(worker: RunningWorker, service: str) -> Any:
    stub = health_pb2_grpc.HealthStub(worker.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


async def test_health_goes_from_serving_to_not_serving_on_drain(redis_url: str) -> None:
    """SERVING while up; on drain NOT_SERVING at once, new sessions UNAVAILABLE, and the
    active session still finishes its utterance."""
    async with running_worker(worker_config(redis_url, drain_grace_s=5.0)) as worker:
        for service in ("", "tts.v1.TTSWorker"):
            assert await _health(worker, service) == health_pb2.HealthCheckResponse.SERVING
        stream = LiveStream(worker.stub)
        await stream.open()
        await stream.send("One more sentence to finish.")  # 1.7 s of tone at the lead's pace
        await stream.wait_for(lambda g: len(g.frames) >= 1)
        drain = asyncio.create_task(worker.app.drain_and_stop())
        await asyncio.sleep(0.2)
        for service in ("", "tts.v1.TTSWorker"):
            assert await _health(worker, service) == health_pb2.HealthCheckResponse.NOT_SERVING
        refused = await _status(worker.stub, open_request())
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        await stream.wait_for(lambda g: len(g.ends) == 1)
        assert not stream.got.ends[0].stopped
        assert stream.got.ends[0].voiced_length == len("One more sentence to finish.")
        await asyncio.wait_for(drain, 10)
        # Once it had nothing left to say, the session was ended for the client to move on.
        assert stream.error is not None
        assert stream.error.code() == grpc.StatusCode.UNAVAILABLE
        assert worker.app.servicer.active_sessions() == 0


async def test_server_reflection_lists_the_worker_and_health_services(redis_url: str) -> None:
    """Generic gRPC tools (grpcurl) can discover the services without the .proto files."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async with running_worker(worker_config(redis_url)) as worker:
        stub = reflection_pb2_grpc.ServerReflectionStub(worker.channel)
        async for reply in stub.ServerReflectionInfo(requests(), timeout=5):
            names = {s.name for s in reply.list_services_response.service}
            break
    assert {"tts.v1.TTSWorker", "grpc.health.v1.Health"} <= names
