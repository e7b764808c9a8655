"""A worker killed (kill -9) while `/v1/audio/speech` streams its answer: the same HTTP
response goes on from the text that was not yet spoken, on another worker.

The victim is a real `python -m duplex.worker` process serving the tone voice at a real-time
factor of 0.2 (so the answer takes seconds to make); the survivor registers once the request
is streaming (a session stays with its worker). The tone voice gives 60 ms a character of
each clause, so the audio length tells what was spoken: nothing may be missing, and at most
the clause that was cut may be heard twice.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from duplex.text import ClauseSegmenter

from tests.integration.openai_fixtures import RATE, api_config, sdk
from tests.integration.orchestrator_fixtures import (
    free_port,
    running_orchestrator,
    tone_frames,
    wait_for_workers,
)
from tests.integration.worker_fixtures import (
    running_worker,
    start_worker_process,
    stop_process,
    worker_config,
    write_worker_yaml,
)

MODEL = "tone-rt02"
TEXT = "".join(f"This is clause number {n} of a long answer, " for n in range(1, 13)) + "the end."
FRAME_BYTES = RATE // 50 * 2


@pytest.fixture
def victim(redis_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    config = worker_config(redis_url, name="victim", default_model_id=MODEL, worker_ttl_ms=1000)
    config = replace(config, worker=replace(config.worker, grpc_port=free_port()))
    proc = start_worker_process(write_worker_yaml(tmp_path / "victim.yaml", config))
    yield proc
    stop_process(proc, sig=signal.SIGKILL)


def longest_clause_frames(text: str) -> int:
    seg = ClauseSegmenter()
    return max(tone_frames(c.text) for c in seg.push(text) + seg.finish() if not c.is_blank)


async def test_a_worker_killed_mid_response_fails_over_and_the_stream_goes_on(
    redis_url: str, victim: subprocess.Popen[str]
) -> None:
    config = api_config(redis_url, frame_timeout_s=10.0)
    async with running_orchestrator(config) as orch:
        await wait_for_workers(orch, {"victim"}, limit_s=30)
        body = bytearray()
        got_some = asyncio.Event()

        async def read() -> None:
            async with sdk(orch).audio.speech.with_streaming_response.create(
                model="tts-1", voice=MODEL, input=TEXT, response_format="pcm"
            ) as resp:
                async for chunk in resp.iter_bytes():
                    body.extend(chunk)
                    if len(body) >= 50 * FRAME_BYTES:
                        got_some.set()

        reader = asyncio.create_task(read())
        try:
            async with running_worker(
                worker_config(redis_url, name="survivor", default_model_id=MODEL)
            ):
                async with asyncio.timeout(30):
                    await got_some.wait()
                await wait_for_workers(orch, {"victim", "survivor"})
                before_kill = len(body)
                victim.send_signal(signal.SIGKILL)
                async with asyncio.timeout(60):
                    await reader
        finally:
            reader.cancel()
        metrics = orch.app.state.runtime.metrics.render().decode()
    frames = len(body) // FRAME_BYTES
    reference = tone_frames(TEXT)
    print(f"\n{before_kill // FRAME_BYTES} frames before the kill, {frames} in all "
          f"(the text alone: {reference})")  # fmt: skip
    assert before_kill < reference * FRAME_BYTES  # the kill came mid-response
    assert len(body) % FRAME_BYTES == 0
    assert reference <= frames <= reference + longest_clause_frames(TEXT)
    assert "duplex_orch_failovers_total 1.0" in metrics
    assert 'duplex_orch_api_requests_total{api="openai",status="200"} 1.0' in metrics
