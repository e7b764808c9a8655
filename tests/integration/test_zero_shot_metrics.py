"""Zero-shot conditioning is observable: two sessions with the same reference recording give
one miss and one hit, on a scraped /metrics and in the log.

Real parts: the XTTS adapter loaded through its production path on the tiny random model of
tests/integration/tiny_models.py (coqui-tts, torch), the worker's Prometheus registry served
by its real HTTP server. Connecting a loaded voice's cache to the worker's registry is the
model manager's job (`watch_conditioning`, checked end to end in test_zero_shot_routing.py);
here the test connects it the same way.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from duplex.worker.adapters.base import AdapterOptions
from duplex.worker.adapters.zero_shot import ReferenceAudio, watch_conditioning
from duplex.worker.catalog import ModelSpec
from duplex.worker.metrics import MetricsServer, WorkerPromMetrics
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.tiny_models import XTTS_CHUNK_TOKENS, shared_tiny_xtts

HAVE_XTTS = importlib.util.find_spec("TTS") is not None and importlib.util.find_spec("torch")
pytestmark = pytest.mark.skipif(
    not HAVE_XTTS, reason="coqui-tts/torch not installed (optional extra: make venv installs it)"
)
MODEL_ID = "xtts-v2-en-demo"
COUNTER = "duplex_worker_zero_shot_conditioning_total"
SECONDS_COUNT = "duplex_worker_zero_shot_conditioning_seconds_count"
LOGGER = "duplex.worker.adapters.zero_shot"


def _spec(model_dir: Path) -> ModelSpec:
    params = {"model_dir": str(model_dir), "stream_chunk_size": str(XTTS_CHUNK_TOKENS)}
    return ModelSpec(MODEL_ID, "xtts", ("en",), ("streaming", "zero_shot"), 24000, "tiny", params)


def _reference(rate: int = 16000) -> ReferenceAudio:
    rng = np.random.default_rng(3)
    t = np.arange(rate) / rate  # one second
    wave = 6000 * np.sin(2 * np.pi * 150 * t) + rng.normal(0, 800, t.size)
    return ReferenceAudio(wave.astype("<i2").tobytes(), rate)


def _scrape(url: str) -> dict[tuple[str, str], float]:
    """(series name, outcome label or "") -> value, for the zero-shot series."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (COUNTER, SECONDS_COUNT):
                assert sample.labels["model"] == MODEL_ID
                out[(sample.name, sample.labels.get("outcome", ""))] = sample.value
    return out


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        str(getattr(r, "result", ""))
        for r in caplog.records
        if r.name == LOGGER and r.getMessage() == "zero-shot conditioning"
    ]


async def test_two_sessions_with_one_reference_scrape_as_one_miss_and_one_hit(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The XTTS voice's cache, connected to a worker registry, counts the first session's
    conditioning as a miss (with its compute time) and the second's as a hit."""
    from duplex.worker.adapters.xtts import XttsAdapter

    model_dir = shared_tiny_xtts(tmp_path_factory.getbasetemp())
    voice = XttsAdapter().load(_spec(model_dir), AdapterOptions(use_cuda=False))
    metrics = WorkerPromMetrics("tts-xtts@0")
    server = MetricsServer(metrics.registry, "127.0.0.1", 0)
    port = server.start()
    try:
        assert watch_conditioning(
            voice, MODEL_ID, partial(metrics.zero_shot_conditioning, MODEL_ID)
        )
        reference = _reference()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            for _ in range(2):
                session = voice.session_voice(reference=reference, language="en")
                assert sum(c.size for c in session.synthesize("Hello there.")) > 0
        got = await asyncio.to_thread(_scrape, f"http://127.0.0.1:{port}/metrics")
    finally:
        await asyncio.to_thread(server.stop)
        voice.close()
    print(f"zero-shot metrics after two sessions: {got}")
    assert got == {(COUNTER, "hit"): 1, (COUNTER, "miss"): 1, (SECONDS_COUNT, ""): 1}
    assert _logged(caplog) == ["miss", "hit"]
