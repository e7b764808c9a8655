"""The CosyVoice2 adapter on a tiny model: streaming, framing, zero-shot, early close, errors.

Real parts: our adapter (directory check, default voice, zero-shot conditioning and its
cache, the streaming consumer, the sweep after an early close), the ``cosyvoice2-eu``
runtime's ``CosyVoice2Model`` (its streaming loop, HiFT cache and fades, per-generation
threads, checkpoint loading) and its HiFT vocoder with tiny random weights, torch, the model
manager and a real gRPC worker. Injected (tests/integration/tiny_models.py says why): the
engine factory that replaces ``CosyVoice2(model_dir)``, and inside it the LLM, the flow and
the frontend, small stand-ins with the runtime's interfaces. The audio is noise. The ``gpu``
test at the end runs the runtime's own loader on real weights when ``COSYVOICE_MODEL_DIR``
points at them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from duplex.gen.tts.v1 import tts_pb2
from duplex.worker.adapters.base import AdapterOptions
from duplex.worker.adapters.zero_shot import ReferenceAudio, ReferenceAudioError
from duplex.worker.catalog import Catalog, ModelSpec

from tests.integration.worker_fixtures import collect, running_worker, text_request, worker_config

HAVE_COSY = (
    importlib.util.find_spec("cosyvoice") is not None
    and importlib.util.find_spec("torch") is not None
)
SKIP_REASON = "cosyvoice2-eu/torch not installed (optional: make venv installs them --no-deps)"
needs_cosy = pytest.mark.skipif(not HAVE_COSY, reason=SKIP_REASON)
# The runtime's own deprecation noise (torch.cuda.amp, NumPy 2's __array_wrap__).
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning:cosyvoice.cli.model"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:cosyvoice.utils.common"),
]
MODEL_ID = "cosyvoice2-en-base"
RATE = 24000
# The runtime's streaming hop: 25 tokens x 2 mel frames x 480 samples, less the 8-frame HiFT
# cache it keeps back for the fade (3,840 samples); the last chunk is what is left.
FIRST_CHUNK = 25 * 2 * 480 - 8 * 480


def _spec(model_dir: Path | str, **params: str) -> ModelSpec:
    merged = {"model_dir": str(model_dir), **params}
    return ModelSpec(MODEL_ID, "cosyvoice2", ("en",), ("streaming", "zero_shot"), RATE, "t", merged)


def _reference(seed: int, seconds: float = 1.0, rate: int = 16000) -> ReferenceAudio:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 6000 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + rng.normal(0, 800, t.size)
    return ReferenceAudio(wave.astype("<i2").tobytes(), rate)


@pytest.fixture(scope="session")
def tiny_cosy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny CosyVoice2 directory for the run (under a megabyte, built in a second)."""
    if not HAVE_COSY:
        pytest.skip(SKIP_REASON)
    from tests.integration.tiny_models import build_tiny_cosyvoice2

    return build_tiny_cosyvoice2(tmp_path_factory.mktemp("cosyvoice2"))


def _adapter() -> Any:
    from duplex.worker.adapters.cosyvoice import CosyVoiceAdapter

    from tests.integration.tiny_models import load_tiny_cosyvoice2

    return CosyVoiceAdapter(engine_factory=load_tiny_cosyvoice2)


@pytest.fixture(scope="module")
def voice(tiny_cosy_dir: Path) -> Iterator[Any]:
    loaded = _adapter().load(_spec(tiny_cosy_dir), AdapterOptions(use_cuda=False))
    yield loaded
    loaded.close()


@needs_cosy
def test_default_voice_streams_hop_sized_chunks_first_before_last(voice: Any) -> None:
    """A clause of 70 tokens: two hop-sized chunks, then the rest, the first well before it."""
    from tests.integration.tiny_models import COSYVOICE_TOKENS

    assert voice.sample_rate == RATE and voice.device == "cpu"
    start = time.perf_counter()
    arrivals: list[float] = []
    chunks: list[np.ndarray] = []
    for chunk in voice.synthesize("Hello there, friend."):
        arrivals.append(time.perf_counter() - start)
        chunks.append(chunk)
    assert [c.size for c in chunks[:2]] == [FIRST_CHUNK, 25 * 2 * 480]
    assert len(chunks) == 3
    assert sum(c.size for c in chunks) == COSYVOICE_TOKENS * 2 * 480
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    assert arrivals[0] < arrivals[-1]
    print(
        f"cosyvoice tiny: {len(chunks)} chunks, "
        f"first {arrivals[0]:.2f} s, last {arrivals[-1]:.2f} s"
    )


@needs_cosy
def test_reference_audio_conditioning_is_cached_by_content(voice: Any) -> None:
    """The same recording twice runs the frontend once; another recording runs it again."""
    frontend = voice._engine.frontend
    before, hits = frontend.conditioned, voice.cache.hits
    first = voice.session_voice(reference=_reference(1))
    voice.session_voice(reference=_reference(1))
    assert (frontend.conditioned - before, voice.cache.hits - hits) == (1, 1)
    voice.session_voice(reference=_reference(2))
    assert frontend.conditioned - before == 2
    assert sum(c.size for c in first.synthesize("Hello.")) > 0


@needs_cosy
def test_reference_audio_too_short_is_refused(voice: Any) -> None:
    """Under half a second: ReferenceAudioError naming the minimum."""
    with pytest.raises(ReferenceAudioError, match="at least"):
        voice.session_voice(reference=_reference(3, seconds=0.2))


@needs_cosy
def test_early_close_frees_the_model_and_leaves_no_runtime_state(voice: Any) -> None:
    """Leaving a clause after its first chunk: the next clause runs, and the runtime's
    per-generation dictionaries hold nothing once it ends (the abandoned one is swept)."""
    stream = voice.synthesize("Hello there, friend.")
    assert next(stream).size
    stream.close()
    assert sum(c.size for c in voice.synthesize("Nine.")) > 0
    model = voice._engine.model
    assert model.llm_end_dict == {} and model.tts_speech_token_dict == {}


@needs_cosy
def test_two_sessions_in_threads_each_get_their_whole_clause(voice: Any) -> None:
    """Two sessions (one zero-shot) at once take turns and each gets all its audio."""
    from tests.integration.tiny_models import COSYVOICE_TOKENS

    voices = [voice.session_voice(), voice.session_voice(reference=_reference(4))]
    sizes: list[int] = [0, 0]

    def run(i: int) -> None:
        sizes[i] = sum(c.size for c in voices[i].synthesize("Hello there."))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sizes == [COSYVOICE_TOKENS * 2 * 480] * 2


@pytest.mark.parametrize("missing", ["cosyvoice2.yaml", "llm.pt", "campplus.onnx"])
def test_a_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    """Each required file, when absent, is named with the layout the adapter expects."""
    from duplex.worker.adapters.cosyvoice import REQUIRED_FILES, CosyVoiceAdapter

    for name in REQUIRED_FILES:
        if name != missing:
            (tmp_path / name).write_text("x")
    with pytest.raises(FileNotFoundError, match=f"{missing} is missing"):
        CosyVoiceAdapter().load(_spec(tmp_path), AdapterOptions(use_cuda=False))


def test_no_model_directory_says_what_to_configure() -> None:
    """An unset directory names model_dirs and COSYVOICE_MODEL_DIR."""
    from duplex.worker.adapters.cosyvoice import CosyVoiceAdapter

    with pytest.raises(FileNotFoundError, match="COSYVOICE_MODEL_DIR"):
        CosyVoiceAdapter().load(_spec(""), AdapterOptions(use_cuda=False))


@needs_cosy
@pytest.mark.skipif(
    importlib.util.find_spec("hyperpyyaml") is not None,
    reason="the runtime's full requirements are installed here (a GPU image)",
)
def test_without_the_runtimes_requirements_the_load_says_what_to_install(
    tiny_cosy_dir: Path,
) -> None:
    """The runtime's own loader (CosyVoice2) needs hyperpyyaml and more, which the test
    install leaves out: AdapterUnavailable naming the package, never a bare ImportError."""
    from duplex.worker.adapters.base import AdapterUnavailable
    from duplex.worker.adapters.cosyvoice import CosyVoiceAdapter

    with pytest.raises(AdapterUnavailable, match="cosyvoice2-eu"):
        CosyVoiceAdapter().load(_spec(tiny_cosy_dir), AdapterOptions(use_cuda=False))


# -- through a real gRPC worker -------------------------------------------------------------


def _open(*, sample_rate: int, reference: ReferenceAudio | None = None) -> Any:
    opening = tts_pb2.SessionOpen(model_id=MODEL_ID, sample_rate=sample_rate, lead_ms=0)
    if reference is not None:
        opening.reference_audio.pcm = reference.pcm
        opening.reference_audio.sample_rate = reference.sample_rate
    return tts_pb2.SynthesizeRequest(open=opening)


@needs_cosy
async def test_worker_streams_exact_frames_at_the_session_rate_for_two_sessions(
    tiny_cosy_dir: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two concurrent sessions (one zero-shot) each get exact 20 ms frames at 48 kHz.
    Injected: the registry's adapter builds the tiny engine instead of CosyVoice2()."""
    from duplex.worker.adapters import cosyvoice

    from tests.integration.tiny_models import load_tiny_cosyvoice2

    monkeypatch.setattr(cosyvoice, "load_runtime_engine", load_tiny_cosyvoice2)
    config = worker_config(redis_url, adapter_type="cosyvoice2", default_model_id=MODEL_ID)
    catalog = Catalog([_spec(tiny_cosy_dir)])
    async with running_worker(config, catalog=catalog) as worker:
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
            assert [f.sequence for f in got.frames] == list(range(len(got.frames)))
            assert got.frame_times[0] <= got.frame_times[-1]
            assert len(got.ends) == 1 and got.ends[0].frames == len(got.frames)
        assert worker.app.models.is_loaded(MODEL_ID)


# -- real weights (a GPU host) ------------------------------------------------------------

REAL_DIR = os.environ.get("COSYVOICE_MODEL_DIR", "")


@pytest.mark.gpu
@pytest.mark.skipif(
    not REAL_DIR,
    reason="COSYVOICE_MODEL_DIR is not set: the real CosyVoice2-0.5B weights are not on this "
    "machine (run on a GPU host with them; README, 'Bringing GPU model weights')",
)
def test_real_cosyvoice2_weights_stream_and_clone() -> None:
    """Real weights through the runtime's loader: several 24 kHz chunks, zero-shot too."""
    from duplex.worker.adapters.cosyvoice import CosyVoiceAdapter

    voice = CosyVoiceAdapter().load(_spec(REAL_DIR), AdapterOptions())
    try:
        cloned = voice.session_voice(reference=_reference(7, seconds=3.0))
        chunks = list(cloned.synthesize("Hello there, friend. The meeting starts at nine."))
        assert len(chunks) >= 2
        assert sum(c.size for c in chunks) > RATE // 2
        print(f"cosyvoice2 real: device {voice.device}, {len(chunks)} chunks")
    finally:
        voice.close()
