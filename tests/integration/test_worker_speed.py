"""SessionOpen.speed on a real worker: Piper speaks faster and is still understood, the tone
voice's length follows the rate, and a rate out of range is refused before any audio."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from duplex.audio.frames import PcmFrame
from duplex.workerclient import WorkerClient, WorkerUtteranceEnd

from tests.integration.openai_fixtures import transcript_wer
from tests.integration.speech_check import load_whisper
from tests.integration.worker_fixtures import (
    collect,
    open_request,
    piper_config,
    running_worker,
    worker_config,
)

TEXT = "Please bring your notes to the meeting, and arrive early."
RATE = 24000


@pytest.fixture(scope="module")
def whisper() -> Any:
    return load_whisper()


async def _speak(client: WorkerClient, speed: float | None) -> bytes:
    stream = await client.open_stream("", None, RATE, "en", 0, speed=speed)
    try:
        await stream.send_text(TEXT, is_final=True)
        pcm: list[bytes] = []
        async for event in stream.events():
            if isinstance(event, PcmFrame):
                pcm.append(event.pcm)
            elif isinstance(event, WorkerUtteranceEnd):
                return b"".join(pcm)
        raise AssertionError("the stream ended before its utterance")
    finally:
        await stream.close()


async def test_piper_at_speed_two_is_about_half_as_long_and_still_understood(
    redis_url: str, whisper: Any
) -> None:
    async with running_worker(piper_config(redis_url)) as worker:
        client = WorkerClient(worker.target)
        try:
            normal = await _speak(client, None)
            fast = await _speak(client, 2.0)
            slow = await _speak(client, 0.5)
        finally:
            await client.close()
    ratio, slow_ratio = len(fast) / len(normal), len(slow) / len(normal)
    wer, heard = transcript_wer(whisper, fast, TEXT, RATE)
    print(
        f"\nPiper: 1.0 -> {len(normal) / 2 / RATE:.2f} s, 2.0 -> {len(fast) / 2 / RATE:.2f} s "
        f"(ratio {ratio:.2f}), 0.5 -> ratio {slow_ratio:.2f}; heard at 2.0: {heard!r}"
    )
    assert ratio < 0.75
    assert slow_ratio > 1.5
    assert wer <= 0.2, heard


async def test_tone_at_speed_four_is_a_quarter_as_long(redis_url: str) -> None:
    async with running_worker(worker_config(redis_url)) as worker:
        client = WorkerClient(worker.target)
        try:
            normal, fast = await _speak(client, 1.0), await _speak(client, 4.0)
        finally:
            await client.close()
    print(f"\ntone: speed 4.0 gives {len(fast) / len(normal):.3f} of the length")
    assert 0.2 < len(fast) / len(normal) < 0.3


@pytest.mark.parametrize("speed", [0.1, 5.0])
async def test_a_rate_out_of_range_is_refused_with_invalid_argument(
    redis_url: str, speed: float
) -> None:
    async with running_worker(worker_config(redis_url)) as worker:
        opening = open_request(sample_rate=RATE)
        opening.open.speed = speed
        # The opening alone: a request still being written when the server refuses the stream
        # would end the call with the client's own write error (INTERNAL) instead.
        call = worker.stub.Synthesize(iter([opening]), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await collect(call)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "speed" in str(refused.value.details())
