"""Helpers for the compatible APIs' tests: an orchestrator with workers, and what came back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import openai
import soxr
from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import OrchestratorConfig, WyomingConfig

from tests.integration.orchestrator_fixtures import (
    orch_config,
    running_orchestrator,
    tone_catalog,
    wait_for_workers,
)
from tests.integration.speech_check import word_error_rate
from tests.integration.worker_fixtures import piper_config, running_worker, worker_config

PIPER_MODEL = "piper-en-joe-medium"
RATE = 24000


def api_config(redis_url: str, *, wyoming: bool = False, **session: Any) -> OrchestratorConfig:
    config = orch_config(redis_url, **session)
    if wyoming:
        config = replace(config, wyoming=WyomingConfig(enabled=True, host="127.0.0.1", port=0))
    return config


@asynccontextmanager
async def fleet(
    redis_url: str,
    *,
    piper: bool = False,
    tone_rtf: float | None = None,
    config: OrchestratorConfig | None = None,
) -> AsyncIterator[OrchestratorServer]:
    """An orchestrator and its workers: Piper, and/or a tone worker ("tone-fast")."""
    async with AsyncExitStack() as stack:
        names = set()
        if piper:
            await stack.enter_async_context(running_worker(piper_config(redis_url)))
            names.add("test-piper")
        if tone_rtf is not None:
            catalog = tone_catalog("tone-fast", ("en",), rtf=tone_rtf)
            await stack.enter_async_context(
                running_worker(worker_config(redis_url, name="test-tone"), catalog=catalog)
            )
            names.add("test-tone")
        orch = await stack.enter_async_context(
            running_orchestrator(config or api_config(redis_url))
        )
        await wait_for_workers(orch, names)
        yield orch


def sdk(orch: OrchestratorServer, api_key: str = "unused") -> openai.AsyncOpenAI:
    """The openai SDK pointed at the orchestrator (no retries: a refusal is what we test)."""
    return openai.AsyncOpenAI(
        base_url=f"{orch.http_url}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=30.0,
    )


@dataclass
class Streamed:
    """The body of one streamed response, with arrival times."""

    chunks: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    sent_at: float = 0.0

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def first_s(self) -> float:
        return self.times[0] - self.sent_at

    @property
    def spread_s(self) -> float:
        """From the first bytes to the last."""
        return self.times[-1] - self.times[0]


async def stream_speech(client: openai.AsyncOpenAI, text: str, **params: Any) -> Streamed:
    got = Streamed(sent_at=time.monotonic())
    params.setdefault("model", "tts-1")
    params.setdefault("voice", "alloy")
    async with client.audio.speech.with_streaming_response.create(input=text, **params) as resp:
        assert resp.status_code == 200
        async for chunk in resp.iter_bytes():
            got.chunks.append(chunk)
            got.times.append(time.monotonic())
    return got


def pcm_of(body: bytes, fmt: str) -> bytes:
    """The s16le samples of a pcm or streamed-wav body (the header's 44 bytes off)."""
    if fmt == "wav":
        assert body[:4] == b"RIFF" and body[8:16] == b"WAVEfmt " and body[36:40] == b"data"
        return body[44:]
    return body


def transcript_wer(whisper: Any, pcm: bytes, reference: str, rate: int = RATE) -> tuple[float, str]:
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    audio16 = soxr.resample(audio, rate, 16000).astype(np.float32)
    segments, _ = whisper.transcribe(audio16, language="en", beam_size=1)
    text = " ".join(s.text for s in segments)
    return word_error_rate(reference, text), text
