"""The zero-shot conditioning cache reports each lookup where it decides: to its observer (the
worker's metrics) and as a log line with fields."""

from __future__ import annotations

import logging
from functools import partial

import pytest
from duplex.worker.adapters.zero_shot import (
    CacheResult,
    ConditioningCache,
    watch_conditioning,
)
from duplex.worker.metrics import WorkerPromMetrics

W = "tts-xtts@0"
MODEL = "xtts-v2-en-demo"
Seen = list[tuple[CacheResult, float | None]]


def _recorder() -> tuple[Seen, partial[None]]:
    seen: Seen = []

    def record(result: CacheResult, compute_s: float | None) -> None:
        seen.append((result, compute_s))

    return seen, partial(record)


def test_a_miss_then_a_hit_reach_the_observer_with_the_compute_time() -> None:
    cache: ConditioningCache[str] = ConditioningCache()
    seen, observer = _recorder()
    cache.watch(MODEL, observer)
    assert cache.get_or_compute("k", lambda: "latents") == "latents"
    assert cache.get_or_compute("k", lambda: "other") == "latents"
    assert [r for r, _ in seen] == [CacheResult.MISS, CacheResult.HIT]
    miss_s, hit_s = (s for _, s in seen)
    assert miss_s is not None and miss_s >= 0 and hit_s is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_a_computation_that_raises_is_still_a_miss_without_a_duration() -> None:
    cache: ConditioningCache[str] = ConditioningCache()
    seen, observer = _recorder()
    cache.watch(MODEL, observer)

    def fail() -> str:
        raise ValueError("unusable audio")

    with pytest.raises(ValueError, match="unusable audio"):
        cache.get_or_compute("k", fail)
    assert seen == [(CacheResult.MISS, None)]
    assert len(cache) == 0


def test_each_lookup_is_logged_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    cache: ConditioningCache[str] = ConditioningCache()
    cache.watch(MODEL, None)
    key = "ab" * 32
    with caplog.at_level(logging.INFO, logger="duplex.worker.adapters.zero_shot"):
        cache.get_or_compute(key, lambda: "latents")
        cache.get_or_compute(key, lambda: "latents")
    records = [r for r in caplog.records if r.getMessage() == "zero-shot conditioning"]
    fields = [
        {k: getattr(r, k, None) for k in ("result", "model_id", "reference_sha256", "hits")}
        for r in records
    ]
    assert fields == [
        {"result": "miss", "model_id": MODEL, "reference_sha256": key[:16], "hits": 0},
        {"result": "hit", "model_id": MODEL, "reference_sha256": key[:16], "hits": 1},
    ]
    assert isinstance(getattr(records[0], "compute_ms", None), float)
    assert not hasattr(records[1], "compute_ms")


def test_the_worker_metrics_count_hits_and_misses_per_model() -> None:
    metrics = WorkerPromMetrics(W)

    class Voice:
        cache: ConditioningCache[str] = ConditioningCache()

    voice = Voice()
    assert watch_conditioning(voice, MODEL, partial(metrics.zero_shot_conditioning, MODEL))
    assert voice.cache.watched
    for _ in range(3):
        voice.cache.get_or_compute("k", lambda: "latents")
    value = metrics.registry.get_sample_value
    labels = {"worker": W, "model": MODEL}
    assert value("duplex_worker_zero_shot_conditioning_total", {**labels, "outcome": "hit"}) == 2
    assert value("duplex_worker_zero_shot_conditioning_total", {**labels, "outcome": "miss"}) == 1
    assert value("duplex_worker_zero_shot_conditioning_seconds_count", labels) == 1


def test_a_voice_without_a_conditioning_cache_is_left_alone() -> None:
    metrics = WorkerPromMetrics(W)
    observer = partial(metrics.zero_shot_conditioning, MODEL)
    assert not watch_conditioning(object(), MODEL, observer)


def test_an_unknown_outcome_is_refused_rather_than_becoming_a_label() -> None:
    with pytest.raises(ValueError, match="zero-shot outcome"):
        WorkerPromMetrics(W).zero_shot_conditioning(MODEL, "maybe", None)
