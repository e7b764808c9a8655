"""The VAD engines: validation, silence, a voiced signal, silero's state, the factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from duplex.audio import (
    SileroModel,
    SileroVad,
    VoiceActivityDetector,
    WebRtcVad,
    frame_bytes,
    make_vad,
)
from duplex.audio.vad import silero_model_path


def _voiced(rate: int, seconds: float) -> bytes:
    """A vowel-like signal: 120 Hz pitch with harmonics shaped by two formants."""
    t = np.arange(int(rate * seconds)) / rate
    signal = np.zeros_like(t)
    for k in range(1, 30):
        hz = 120 * k
        gain = np.exp(-(((hz - 700) / 150) ** 2)) + 0.5 * np.exp(-(((hz - 1200) / 200) ** 2))
        signal += (gain + 0.02) * np.sin(2 * np.pi * hz * t)
    signal *= 0.4 * 32767 / np.abs(signal).max()
    return signal.astype(np.int16).tobytes()


def _frames(pcm: bytes, size: int) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


@pytest.fixture(scope="module")
def silero_model() -> SileroModel:
    """One loaded silero model for the module (detectors share it, each with its own state)."""
    return SileroModel()


def test_webrtc_is_a_voice_activity_detector() -> None:
    """WebRtcVad satisfies the protocol: 20 ms frames at 16 kHz are 320 samples."""
    vad = WebRtcVad(2, 16000)
    assert isinstance(vad, VoiceActivityDetector)
    assert (vad.sample_rate, vad.frame_samples, vad.frame_ms) == (16000, 320, 20)


@pytest.mark.parametrize("rate", [8000, 16000, 32000, 48000])
def test_silence_is_not_speech(rate: int) -> None:
    """Digital silence is never speech, at any supported rate."""
    vad = WebRtcVad(3, rate)
    assert vad.is_speech(bytes(frame_bytes(rate))) is False


def test_voiced_signal_is_speech() -> None:
    """A loud voiced signal is speech in most frames, at every aggressiveness."""
    pcm = _voiced(16000, 1.0)
    for mode in range(4):
        vad = WebRtcVad(mode, 16000)
        decisions = [vad.is_speech(f) for f in _frames(pcm, frame_bytes(16000))]
        assert sum(decisions) >= 0.8 * len(decisions)


def test_webrtc_reset_keeps_working() -> None:
    """After reset the detector still classifies: silence is not speech."""
    vad = WebRtcVad(2, 16000)
    for frame in _frames(_voiced(16000, 0.2), 640):
        vad.is_speech(frame)
    vad.reset()
    assert vad.is_speech(bytes(640)) is False


def test_wrong_frame_size_is_a_clear_error() -> None:
    """A frame that is not exactly frame_ms long is rejected with the expected size."""
    vad = WebRtcVad(2, 16000)
    with pytest.raises(ValueError, match="640 bytes"):
        vad.is_speech(bytes(100))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aggressiveness": 4, "sample_rate": 16000}, "aggressiveness"),
        ({"aggressiveness": 1, "sample_rate": 22050}, "sample rates"),
        ({"aggressiveness": 1, "sample_rate": 16000, "frame_ms": 25}, "frames of"),
    ],
)
def test_unsupported_settings_are_rejected(kwargs: dict[str, int], message: str) -> None:
    """Only what libwebrtc supports is accepted: modes 0-3, 8/16/32/48 kHz, 10/20/30 ms."""
    with pytest.raises(ValueError, match=message):
        WebRtcVad(**kwargs)


def test_silero_is_a_voice_activity_detector(silero_model: SileroModel) -> None:
    """SileroVad satisfies the protocol with 512-sample windows at 16 kHz."""
    vad = SileroVad(model=silero_model)
    assert isinstance(vad, VoiceActivityDetector)
    assert (vad.sample_rate, vad.frame_samples, vad.threshold) == (16000, 512, 0.5)


def test_silero_silence_is_not_speech(silero_model: SileroModel) -> None:
    """A second of digital silence gives no speech window and a low probability."""
    vad = SileroVad(model=silero_model)
    assert not any(vad.is_speech(bytes(1024)) for _ in range(31))
    assert vad.last_probability < 0.1


def test_silero_wrong_window_size_is_a_clear_error(silero_model: SileroModel) -> None:
    """A window that is not 512 samples is rejected, naming the expected size."""
    vad = SileroVad(model=silero_model)
    with pytest.raises(ValueError, match="1024 bytes"):
        vad.is_speech(bytes(640))


def test_silero_keeps_state_across_windows_and_reset_forgets_it(
    silero_model: SileroModel,
) -> None:
    """The same window scores differently after other audio (recurrent state and context),
    and reset() makes a detector score exactly like a fresh one."""
    rng = np.random.default_rng(1)
    noise = [rng.normal(0, 3000, 512).astype(np.int16).tobytes() for _ in range(10)]
    windows = noise + _frames(_voiced(16000, 0.5), 1024)
    probe = windows[-1]
    fresh = SileroVad(model=silero_model).probability(probe)

    vad = SileroVad(model=silero_model)
    for window in windows:
        vad.probability(window)
    after_stream = vad.probability(probe)
    vad.reset()
    after_reset = vad.probability(probe)

    assert after_stream != pytest.approx(fresh, abs=1e-6)
    assert after_reset == pytest.approx(fresh, abs=1e-6)


def test_silero_threshold_is_validated() -> None:
    """A threshold outside (0, 1) is refused before any model is loaded."""
    with pytest.raises(ValueError, match="threshold"):
        SileroVad(1.5)


def test_missing_silero_file_names_the_install_command(tmp_path: Path) -> None:
    """A model path that does not exist says how to install the package."""
    with pytest.raises(FileNotFoundError, match="pip install --no-deps silero-vad"):
        SileroModel(tmp_path / "nope.onnx")


def test_silero_model_is_found_inside_the_package() -> None:
    """The ONNX file is found in the installed silero-vad package without importing it."""
    path = silero_model_path()
    assert path.name == "silero_vad.onnx"
    assert path.is_file()


@pytest.mark.parametrize(
    ("engine", "kind", "frame_samples"), [("webrtc", WebRtcVad, 320), ("silero", SileroVad, 512)]
)
def test_make_vad_builds_each_engine_at_16_khz(
    engine: str, kind: type, frame_samples: int, silero_model: SileroModel
) -> None:
    """The factory gives a 16 kHz detector of the named engine with its window size."""
    vad = make_vad(engine, aggressiveness=2, threshold=0.5, silero_model=silero_model)
    assert isinstance(vad, kind)
    assert (vad.sample_rate, vad.frame_samples) == (16000, frame_samples)


def test_make_vad_passes_the_settings_on() -> None:
    """aggressiveness reaches webrtc, threshold reaches silero."""
    webrtc = make_vad("webrtc", aggressiveness=3, threshold=0.5)
    silero = make_vad("silero", aggressiveness=3, threshold=0.7)
    assert isinstance(webrtc, WebRtcVad) and webrtc.aggressiveness == 3
    assert isinstance(silero, SileroVad) and silero.threshold == 0.7


def test_make_vad_unknown_engine_names_the_allowed_ones() -> None:
    """An unknown engine is a ValueError that lists webrtc and silero."""
    with pytest.raises(ValueError, match="webrtc, silero"):
        make_vad("energy", aggressiveness=2, threshold=0.5)
