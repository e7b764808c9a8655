"""The Piper adapter with the real bundled en_US-joe-medium voice."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import numpy as np
import onnxruntime
import pytest
import soxr
from duplex.worker.adapters import onnx_session
from duplex.worker.adapters.base import AdapterOptions, CudaNotUsed, Device, adapter_for
from duplex.worker.adapters.piper import SEAM_SILENCE_LEVEL, SEAM_TAIL_S, LoadedPiperVoice
from duplex.worker.catalog import builtin_catalog

from tests.integration.speech_check import load_whisper, word_error_rate

MODEL_ID = "piper-en-joe-medium"
TWO_SENTENCES = (
    "The first sentence is short. "
    "The second sentence is a good deal longer, so that the voice needs clearly more time "
    "to synthesize it than it needed for the first one."
)


@pytest.fixture(scope="module")
def voice() -> Iterator[LoadedPiperVoice]:
    """One real Piper voice for the whole module (loading takes about half a second)."""
    loaded = adapter_for("piper").load(
        builtin_catalog().get(MODEL_ID), AdapterOptions(onnx_threads=1)
    )
    assert isinstance(loaded, LoadedPiperVoice)
    list(loaded.synthesize("Warming up."))
    yield loaded
    loaded.close()


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))


def test_first_chunk_arrives_before_the_whole_text_is_synthesized(voice: LoadedPiperVoice) -> None:
    """Two sentences stream as more than one chunk, the first well before synthesis ends."""
    start = time.perf_counter()
    arrivals: list[float] = []
    chunks: list[np.ndarray] = []
    for chunk in voice.synthesize(TWO_SENTENCES):
        arrivals.append(time.perf_counter() - start)
        chunks.append(chunk)
    total = time.perf_counter() - start
    assert len(chunks) >= 2
    # The second sentence is about four times longer: its synthesis comes after the first
    # chunk was handed over. A ratio, not an absolute time, so a slow machine does not matter.
    assert arrivals[0] < 0.75 * total
    assert chunks[1].size > chunks[0].size


def test_audio_is_non_silent_int16_at_the_native_rate(voice: LoadedPiperVoice) -> None:
    """Chunks are int16 mono at 22050 Hz with real signal in them."""
    audio = np.concatenate(list(voice.synthesize("Hello, this is a test of the voice.")))
    assert voice.sample_rate == 22050
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert 0.5 * 22050 < audio.size < 5 * 22050
    assert _rms(audio) > 500


def test_a_clause_cut_between_words_ends_without_a_long_pause(voice: LoadedPiperVoice) -> None:
    """A first clause cut mid-phrase ends soon after its last sound; one ending in a comma
    keeps Piper's own pause."""
    rate = voice.sample_rate

    def silent_tail_s(text: str) -> float:
        audio = np.concatenate(list(voice.synthesize(text))).astype(np.int32)
        loud = np.flatnonzero(np.abs(audio) >= SEAM_SILENCE_LEVEL)
        return (audio.size - 1 - int(loud[-1])) / rate

    cut, comma = silent_tail_s("The quick brown "), silent_tail_s("Hello there, ")
    print(
        f"silent tail: cut between words {cut * 1000:.0f} ms, after a comma {comma * 1000:.0f} ms"
    )
    assert cut <= SEAM_TAIL_S + 1 / rate
    assert comma > SEAM_TAIL_S


def test_one_onnx_thread_is_honoured(voice: LoadedPiperVoice) -> None:
    """The session runs with the configured intra-op threads and one inter-op thread."""
    options = voice.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert voice.provider == voice.session.get_providers()[0]
    assert "CPUExecutionProvider" in voice.session.get_providers()


def test_thread_count_and_cuda_opt_out_come_from_options() -> None:
    """onnx_threads=2, use_cuda=False gives a two-thread CPU session; close() frees it."""
    loaded = adapter_for("piper").load(
        builtin_catalog().get(MODEL_ID), AdapterOptions(onnx_threads=2, use_cuda=False)
    )
    assert isinstance(loaded, LoadedPiperVoice)
    assert loaded.session.get_session_options().intra_op_num_threads == 2
    assert loaded.session.get_providers() == ["CPUExecutionProvider"]
    loaded.close()
    with pytest.raises(RuntimeError, match="closed"):
        list(loaded.synthesize("Too late."))


def test_concurrent_synthesis_on_one_voice(voice: LoadedPiperVoice) -> None:
    """Three threads share one voice: each gets one non-silent chunk per sentence."""
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = list(voice.synthesize(f"Thread {index} speaks. It says two things."))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(results) == [0, 1, 2]
    assert all(len(chunks) == 2 for chunks in results.values())
    assert all(_rms(np.concatenate(chunks)) > 500 for chunks in results.values())


def test_speech_is_intelligible_to_whisper(voice: LoadedPiperVoice) -> None:
    """Whisper tiny.en transcribes the adapter's output with a word error rate of at most 10%."""
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    audio = np.concatenate(list(voice.synthesize(text)))
    pcm16k = soxr.resample(audio.astype(np.float32) / 32768, voice.sample_rate, 16000)
    model = load_whisper()
    segments, _ = model.transcribe(pcm16k, language="en", beam_size=1)
    heard = " ".join(segment.text for segment in segments)
    assert word_error_rate(text, heard) <= 0.10, heard


def test_a_wide_session_has_the_lone_job_threads_and_speaks_the_same_text() -> None:
    """lone_job_threads=2 over onnx_threads=1: a second, 2-thread session that does not spin;
    synthesize_wide gives audio of the same length as synthesize (VITS noise aside)."""
    loaded = adapter_for("piper").load(
        builtin_catalog().get(MODEL_ID), AdapterOptions(onnx_threads=1, lone_job_threads=2)
    )
    assert isinstance(loaded, LoadedPiperVoice)
    wide = loaded.wide_session
    assert wide is not None
    assert wide.get_session_options().intra_op_num_threads == 2
    assert (
        wide.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        == "0"
    )
    assert loaded.session.get_session_options().intra_op_num_threads == 1
    text = "Hello, this is a test of the voice."
    narrow_audio = np.concatenate(list(loaded.synthesize(text)))
    wide_audio = np.concatenate(list(loaded.synthesize_wide(text)))
    assert abs(wide_audio.size - narrow_audio.size) < 0.2 * narrow_audio.size
    assert _rms(wide_audio) > 500
    loaded.close()


def test_no_wide_session_when_lone_job_threads_do_not_exceed_onnx_threads() -> None:
    """onnx_threads=2, lone_job_threads=2: one session only, and synthesize_wide uses it."""
    loaded = adapter_for("piper").load(
        builtin_catalog().get(MODEL_ID), AdapterOptions(onnx_threads=2, lone_job_threads=2)
    )
    assert isinstance(loaded, LoadedPiperVoice)
    assert loaded.wide_session is None
    assert list(loaded.synthesize_wide("Still fine.")) != []
    loaded.close()


def test_cuda_requested_without_a_gpu_falls_back_and_reports_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As onnxruntime-gpu on a machine without GPU: CUDA is listed as available, so it is
    asked for; the session runs on CPU, which the voice reports (get_providers()[0]) and
    the load logs as a fallback."""
    built = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: built)
    asked: list[object] = []
    real_session = onnxruntime.InferenceSession

    def recording_session(*args: object, **kwargs: object) -> onnxruntime.InferenceSession:
        asked.append(kwargs.get("providers"))
        return real_session(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording_session)
    with caplog.at_level(logging.WARNING, logger=onnx_session.__name__):
        loaded = adapter_for("piper").load(
            builtin_catalog().get(MODEL_ID), AdapterOptions.for_device(Device.AUTO)
        )
    assert isinstance(loaded, LoadedPiperVoice)
    first = asked[0]
    assert isinstance(first, list) and first[0][0] == "CUDAExecutionProvider"
    assert loaded.provider == "CPUExecutionProvider"
    assert any(r.getMessage() == "onnx session fell back from CUDA" for r in caplog.records)
    assert list(loaded.synthesize("Runs on the CPU."))
    loaded.close()


def test_device_cuda_fails_loudly_when_cuda_does_not_run_the_model() -> None:
    """device: cuda on this machine (no GPU, CPU build): the load raises, naming the
    provider that would have run it; nothing falls back silently."""
    with pytest.raises(CudaNotUsed, match="CPUExecutionProvider"):
        adapter_for("piper").load(
            builtin_catalog().get(MODEL_ID), AdapterOptions.for_device(Device.CUDA)
        )


def test_device_cpu_never_asks_for_cuda() -> None:
    """device: cpu lists only the CPU provider, whatever onnxruntime was built with."""
    options = AdapterOptions.for_device(Device.CPU)
    built = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_session.providers(options, built) == ["CPUExecutionProvider"]
