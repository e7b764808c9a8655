"""The tone adapter: deterministic, streamed in ~200 ms chunks, paced by its rtf."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from duplex.worker.adapters.base import AdapterOptions, adapter_for
from duplex.worker.adapters.tone import (
    CHUNK_MS,
    MAX_DURATION_MS,
    MS_PER_CHAR,
    ToneAdapter,
    ToneVoice,
    tone_duration_ms,
    tone_pitch,
)
from duplex.worker.catalog import builtin_catalog


class FakeTime:
    """A clock that only advances when slept on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def test_adapter_for_tone_loads_the_catalog_rtf() -> None:
    """adapter_for('tone') builds voices with the catalog's rate and rtf."""
    catalog = builtin_catalog()
    voice = adapter_for("tone").load(catalog.get("tone-rt02"), AdapterOptions())
    assert isinstance(voice, ToneVoice)
    assert voice.model_id == "tone-rt02"
    assert voice.sample_rate == 24000
    assert voice.rtf == pytest.approx(0.2)


def test_output_is_deterministic_int16() -> None:
    """The same text gives the same samples, as int16, every time."""
    voice = ToneVoice("t", 24000, 0.0)
    first = np.concatenate(list(voice.synthesize("hello world")))
    second = np.concatenate(list(voice.synthesize("hello world")))
    assert first.dtype == np.int16
    assert np.array_equal(first, second)
    assert np.abs(first).max() > 1000


def test_duration_is_60_ms_per_character_and_capped() -> None:
    """Audio lasts 60 ms per character, up to the cap; blank text gives nothing."""
    voice = ToneVoice("t", 24000, 0.0)
    audio = np.concatenate(list(voice.synthesize("abcdefghij")))
    assert audio.size == 24000 * 10 * MS_PER_CHAR // 1000
    assert tone_duration_ms("x" * 100_000) == MAX_DURATION_MS
    assert list(voice.synthesize("   ")) == []


def test_pitch_depends_on_text_within_range() -> None:
    """Different texts get different pitches between 220 and 440 Hz, visible in the signal."""
    texts = ["hello", "world", "こんにちは", "a longer sentence here"]
    pitches = [tone_pitch(t) for t in texts]
    assert all(220.0 <= p <= 440.0 for p in pitches)
    assert len(set(pitches)) == len(texts)
    voice = ToneVoice("t", 24000, 0.0)
    audio = voice.render("hello world, this is a tone")
    assert _dominant_hz(audio, 24000) == pytest.approx(
        tone_pitch("hello world, this is a tone"), abs=2
    )


def test_streams_in_200_ms_chunks() -> None:
    """Chunks are 200 ms except the last, and concatenate to the whole signal."""
    voice = ToneVoice("t", 24000, 0.0)
    text = "x" * 20  # 1.2 s
    chunks = list(voice.synthesize(text))
    step = 24000 * CHUNK_MS // 1000
    assert [c.size for c in chunks[:-1]] == [step] * (len(chunks) - 1)
    assert 0 < chunks[-1].size <= step
    assert np.array_equal(np.concatenate(chunks), voice.render(text))


def test_generation_takes_rtf_times_audio_duration() -> None:
    """With rtf 0.5 each chunk is released once half its audio time has passed since start."""
    fake = FakeTime()
    voice = ToneVoice("t", 24000, 0.5, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    produced = 0
    for chunk in voice.synthesize("x" * 20):
        produced += chunk.size
        assert fake.now - start == pytest.approx(0.5 * produced / 24000)
    assert fake.now - start == pytest.approx(0.5 * 1.2)


def test_rtf_zero_never_sleeps() -> None:
    """tone-fast produces at once."""
    fake = FakeTime()
    voice = ToneVoice("t", 24000, 0.0, clock=fake.clock, sleep=fake.sleep)
    assert sum(c.size for c in voice.synthesize("x" * 50)) > 0
    assert fake.sleeps == []


def test_concurrent_calls_give_identical_results() -> None:
    """Several threads on one voice each get the full, correct signal."""
    voice = ToneAdapter().load(builtin_catalog().get("tone-fast"), AdapterOptions())
    expected = voice.render("shared voice")
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def run() -> None:
        audio = np.concatenate(list(voice.synthesize("shared voice")))
        with lock:
            results.append(audio)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(np.array_equal(r, expected) for r in results)


def test_closed_voice_refuses_to_synthesize() -> None:
    """After close() the voice raises instead of producing audio."""
    voice = ToneVoice("t", 24000, 0.0)
    voice.close()
    with pytest.raises(RuntimeError, match="closed"):
        list(voice.synthesize("hello"))
