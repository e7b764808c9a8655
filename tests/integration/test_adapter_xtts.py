"""The XTTS-v2 adapter through its production loading and streaming path, on a tiny model.

Real parts: coqui-tts's ``Xtts`` code (``load_checkpoint``, ``inference_stream``, the
conditioning encoders), torch, torchaudio's pure-PyTorch functions, our adapter, the model
manager, a real gRPC worker. The model directory is built by
:func:`tests.integration.tiny_models.build_tiny_xtts` (real layout, tiny random weights):
the audio is noise, so nothing here checks what it says. The ``gpu`` test at the end runs
the same checks on real weights when ``XTTS_MODEL_DIR`` points at them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
import pytest
from duplex.gen.tts.v1 import tts_pb2
from duplex.worker.adapters.base import AdapterOptions
from duplex.worker.adapters.zero_shot import ReferenceAudio, ReferenceAudioError
from duplex.worker.catalog import Catalog, ModelSpec

from tests.integration.tiny_models import XTTS_CHUNK_TOKENS, shared_tiny_xtts
from tests.integration.worker_fixtures import (
    collect,
    running_worker,
    text_request,
    worker_config,
)

HAVE_XTTS = importlib.util.find_spec("TTS") is not None and importlib.util.find_spec("torch")
SKIP_REASON = "coqui-tts/torch not installed (optional extra: make venv installs '.[xtts]')"
needs_xtts = pytest.mark.skipif(not HAVE_XTTS, reason=SKIP_REASON)
MODEL_ID = "xtts-v2-en-demo"
RATE = 24000


def _spec(model_dir: Path | str, **params: str) -> ModelSpec:
    """The catalog's entry (as _xtts builds it) with the tiny model's chunk size."""
    merged = {
        "model_dir": str(model_dir),
        "language": "en",
        "stream_chunk_size": str(XTTS_CHUNK_TOKENS),
        **params,
    }
    return ModelSpec(MODEL_ID, "xtts", ("en",), ("streaming", "zero_shot"), RATE, "tiny", merged)


def _reference(seed: int, seconds: float = 1.0, rate: int = 16000) -> ReferenceAudio:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 6000 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + rng.normal(0, 800, t.size)
    return ReferenceAudio(wave.astype("<i2").tobytes(), rate)


@pytest.fixture(scope="session")
def tiny_xtts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny XTTS directory for the whole run (about 90 MB, built in seconds)."""
    if not HAVE_XTTS:
        pytest.skip(SKIP_REASON)
    return shared_tiny_xtts(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def voice(tiny_xtts_dir: Path) -> Iterator[object]:
    from duplex.worker.adapters.xtts import XttsAdapter

    loaded = XttsAdapter().load(_spec(tiny_xtts_dir), AdapterOptions(use_cuda=False))
    yield loaded
    loaded.close()


@needs_xtts
def test_default_voice_streams_several_int16_chunks_first_before_last(voice: object) -> None:
    """The built-in speaker's clause arrives as several chunks, the first well before the end."""
    from duplex.worker.adapters.xtts import XttsVoice

    assert isinstance(voice, XttsVoice)
    assert voice.sample_rate == RATE and voice.device == "cpu"
    start = time.perf_counter()
    arrivals: list[float] = []
    chunks: list[np.ndarray] = []
    for chunk in voice.synthesize("Hello there, friend."):
        arrivals.append(time.perf_counter() - start)
        chunks.append(chunk)
    assert len(chunks) >= 2
    assert all(c.dtype == np.int16 and c.ndim == 1 and c.size for c in chunks)
    assert arrivals[0] < arrivals[-1]
    print(f"xtts tiny: {len(chunks)} chunks, first {arrivals[0]:.2f} s, last {arrivals[-1]:.2f} s")


@needs_xtts
def test_reference_audio_latents_are_cached_by_content(voice: object) -> None:
    """The same recording twice computes latents once; another recording computes again."""
    from duplex.worker.adapters.xtts import XttsVoice

    assert isinstance(voice, XttsVoice)
    hits, misses = voice.cache.hits, voice.cache.misses
    first = voice.session_voice(reference=_reference(1))
    again = voice.session_voice(reference=_reference(1))
    assert (voice.cache.hits - hits, voice.cache.misses - misses) == (1, 1)
    voice.session_voice(reference=_reference(2))
    assert voice.cache.misses - misses == 2
    assert first.sample_rate == again.sample_rate == RATE
    assert sum(c.size for c in first.synthesize("Hello.")) > 0


@needs_xtts
def test_reference_audio_too_short_or_too_long_is_refused(voice: object) -> None:
    """Under half a second or over the cap: ReferenceAudioError, nothing cached."""
    from duplex.worker.adapters.xtts import XttsVoice

    assert isinstance(voice, XttsVoice)
    with pytest.raises(ReferenceAudioError, match="at least"):
        voice.session_voice(reference=_reference(3, seconds=0.2))
    with pytest.raises(ReferenceAudioError, match="at most"):
        voice.session_voice(reference=_reference(3, seconds=voice.max_reference_s + 1))


@needs_xtts
def test_early_close_of_the_stream_frees_the_model_for_the_next_clause(voice: object) -> None:
    """Leaving a clause after its first chunk releases the model: the next clause runs."""
    from duplex.worker.adapters.xtts import XttsVoice

    assert isinstance(voice, XttsVoice)
    stream = voice.synthesize("Hello there, friend.")
    assert next(stream).size
    assert isinstance(stream, Generator)  # the adapter's stream is a generator: closable
    stream.close()
    assert sum(c.size for c in voice.synthesize("Nine.")) > 0


@pytest.mark.parametrize("missing", ["config.json", "model.pth", "vocab.json"])
def test_a_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    """Each required file, when absent, is named with the layout the adapter expects."""
    from duplex.worker.adapters.xtts import XttsAdapter

    for name in ("config.json", "model.pth", "vocab.json"):
        if name != missing:
            (tmp_path / name).write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"{missing} is missing"):
        XttsAdapter().load(_spec(tmp_path), AdapterOptions(use_cuda=False))


def test_no_model_directory_says_what_to_configure() -> None:
    """An unset directory names model_dirs and XTTS_MODEL_DIR."""
    from duplex.worker.adapters.xtts import XttsAdapter

    with pytest.raises(FileNotFoundError, match="XTTS_MODEL_DIR"):
        XttsAdapter().load(_spec(""), AdapterOptions(use_cuda=False))


# -- through a real gRPC worker -------------------------------------------------------------


def _xtts_catalog(model_dir: Path) -> Catalog:
    return Catalog([_spec(model_dir)])


def _open(*, sample_rate: int, reference: ReferenceAudio | None = None) -> object:
    opening = tts_pb2.SessionOpen(model_id=MODEL_ID, sample_rate=sample_rate, lead_ms=0)
    if reference is not None:
        opening.reference_audio.pcm = reference.pcm
        opening.reference_audio.sample_rate = reference.sample_rate
    return tts_pb2.SynthesizeRequest(open=opening)


@needs_xtts
async def test_worker_streams_exact_frames_at_the_session_rate_for_two_sessions(
    tiny_xtts_dir: Path, redis_url: str
) -> None:
    """Two concurrent sessions (one zero-shot) each get exact 20 ms frames at 48 kHz."""
    config = worker_config(redis_url, adapter_type="xtts", default_model_id=MODEL_ID)
    async with running_worker(config, catalog=_xtts_catalog(tiny_xtts_dir)) as worker:
        calls = [
            worker.stub.Synthesize(
                iter([_open(sample_rate=48000, reference=ref), text_request("Hello there.")]),
                timeout=120,
            )
            for ref in (None, _reference(5))
        ]
        results = await asyncio.gather(*(collect(c) for c in calls))
        for got in results:
            assert got.opened.sample_rate == 48000
            assert len(got.frames) > 1
            assert {len(f.pcm) for f in got.frames} == {960 * 2}
            assert {f.sample_rate for f in got.frames} == {48000}
            assert [f.sequence for f in got.frames] == list(range(len(got.frames)))
            assert got.frame_times[0] <= got.frame_times[-1]
            assert len(got.ends) == 1 and got.ends[0].frames == len(got.frames)
        assert worker.app.models.is_loaded(MODEL_ID)


@needs_xtts
async def test_worker_refuses_unusable_reference_audio(tiny_xtts_dir: Path, redis_url: str) -> None:
    """A 0.1 s reference ends the stream with INVALID_ARGUMENT naming the minimum."""
    import grpc

    config = worker_config(redis_url, adapter_type="xtts", default_model_id=MODEL_ID)
    async with running_worker(config, catalog=_xtts_catalog(tiny_xtts_dir)) as worker:
        call = worker.stub.Synthesize(
            iter([_open(sample_rate=24000, reference=_reference(6, 0.1)), text_request("Hi.")]),
            timeout=60,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(call)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at least" in (err.value.details() or "")


# -- real weights (a GPU host) ------------------------------------------------------------

REAL_DIR = os.environ.get("XTTS_MODEL_DIR", "")


@pytest.mark.gpu
@pytest.mark.skipif(
    not REAL_DIR,
    reason="XTTS_MODEL_DIR is not set: the real XTTS-v2 weights are not on this machine "
    "(run on a GPU host with them; README, 'Bringing GPU model weights')",
)
def test_real_xtts_weights_stream_and_clone(tmp_path: Path) -> None:
    """Real XTTS-v2 weights: several chunks of 24 kHz audio, default speaker and zero-shot."""
    from duplex.worker.adapters.xtts import XttsAdapter

    voice = XttsAdapter().load(
        _spec(REAL_DIR, speaker=os.environ.get("XTTS_SPEAKER", "")), AdapterOptions()
    )
    try:
        chunks = list(voice.synthesize("Hello there, friend. The meeting starts at nine."))
        assert len(chunks) >= 2
        cloned = voice.session_voice(reference=_reference(7, seconds=3.0))
        assert sum(c.size for c in cloned.synthesize("Hello there.")) > RATE // 4
        print(f"xtts real: device {voice.device}, {len(chunks)} chunks")
    finally:
        voice.close()
