"""A WebSocket SessionStart with reference_audio, end to end: the orchestrator routes it only
to a worker advertising zero_shot, that worker speaks, and the same recording in a second
session reuses the conditioning it computed for the first.

Real parts: redis-server, the orchestrator (WebSocket, routing, worker client), two gRPC
workers (a tone worker without zero_shot and an XTTS worker), the XTTS adapter on the tiny
random model of tests/integration/tiny_models.py (noise, not speech). Nothing is injected.
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from duplex.audio.wav import encode_wav
from duplex.worker.catalog import Catalog, ModelSpec

from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    tone_catalog,
    wait_for_workers,
)
from tests.integration.tiny_models import XTTS_CHUNK_TOKENS, shared_tiny_xtts
from tests.integration.worker_fixtures import running_worker, worker_config

HAVE_XTTS = importlib.util.find_spec("TTS") is not None and importlib.util.find_spec("torch")
pytestmark = pytest.mark.skipif(
    not HAVE_XTTS, reason="coqui-tts/torch not installed (optional extra: make venv installs it)"
)
XTTS_ID = "xtts-v2-en-demo"
COUNTER = "duplex_worker_zero_shot_conditioning_total"


def _reference_wav(seconds: float = 1.0, rate: int = 24000) -> str:
    rng = np.random.default_rng(11)
    t = np.arange(int(seconds * rate)) / rate
    wave = 6000 * np.sin(2 * np.pi * 180 * t) + rng.normal(0, 800, t.size)
    return base64.b64encode(encode_wav(wave.astype("<i2").tobytes(), rate)).decode("ascii")


def _xtts_catalog(model_dir: Path) -> Catalog:
    params = {"model_dir": str(model_dir), "stream_chunk_size": str(XTTS_CHUNK_TOKENS)}
    spec = ModelSpec(XTTS_ID, "xtts", ("en",), ("streaming", "zero_shot"), 24000, "tiny", params)
    return Catalog([spec])


async def _two_sessions_with_one_reference(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> tuple[list[dict[str, object]], list[int], tuple[int, int]]:
    """Starts both workers and the orchestrator, runs two sessions with the same reference;
    returns their SessionStarted replies, frames received, and the worker's conditioning
    (hits, misses) as its metrics count them."""
    xtts_dir = shared_tiny_xtts(tmp_path_factory.getbasetemp())
    plain = worker_config(redis_url, name="plain", default_model_id="tone-en")
    clone = worker_config(redis_url, name="clone", adapter_type="xtts", default_model_id=XTTS_ID)
    reference = _reference_wav()
    started: list[dict[str, object]] = []
    frames: list[int] = []
    async with (
        running_worker(plain, catalog=tone_catalog("tone-en", ("en",))),
        running_worker(clone, catalog=_xtts_catalog(xtts_dir)) as xtts,
        running_orchestrator(orch_config(redis_url)) as orch,
    ):
        await wait_for_workers(orch, {"plain", "clone"})
        for _ in range(2):
            async with Client(orch) as client:
                reply = await client.start(language="en", reference_audio=reference)
                started.append(reply)
                if reply["type"] != "SessionStarted":
                    break
                utt = await client.say("Hello there.", limit_s=120)
                frames.append(len(utt.frames))
        # The model manager connects the loaded voice's cache to the worker's registry.
        registry = xtts.app.metrics.registry
        counts = tuple(
            int(
                registry.get_sample_value(
                    COUNTER, {"worker": "clone", "model": XTTS_ID, "outcome": o}
                )
                or 0
            )
            for o in ("hit", "miss")
        )
    return started, frames, (counts[0], counts[1])


async def test_reference_audio_is_routed_only_to_a_zero_shot_worker_and_spoken(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> None:
    """Both sessions with reference_audio land on the XTTS worker (never the tone worker
    that lacks zero_shot) and get audio; with the reference carried to the worker, the
    second session's conditioning comes from the cache."""
    started, frames, (hits, misses) = await _two_sessions_with_one_reference(
        tmp_path_factory, redis_url
    )
    assert [s["type"] for s in started] == ["SessionStarted"] * 2, started
    assert {s["worker"] for s in started} == {"clone"}
    assert {s["model_id"] for s in started} == {XTTS_ID}
    assert len(frames) == 2 and min(frames) > 5
    print(f"zero-shot e2e: frames {frames}, conditioning cache hits {hits}, misses {misses}")
    assert (hits, misses) == (1, 1)  # computed for the first session, reused by the second
