"""Both VAD engines behind MicInput on real audio: Piper speech, silence, noise and a tone.

The speech is the real bundled Piper voice (22050 Hz) resampled with soxr to the mic's rate;
the tracker uses the orchestrator's default vad settings (min_speech 100 ms, min_silence
300 ms). What webrtc does with noise and tones is asserted as measured, and documented in
duplex/audio/vad.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
import soxr
from duplex.audio import (
    MicInput,
    PcmFrame,
    SileroModel,
    SpeechEnded,
    SpeechEvent,
    SpeechStarted,
    SpeechTracker,
    frame_bytes,
    make_vad,
)
from duplex.worker.adapters.base import AdapterOptions, adapter_for
from duplex.worker.adapters.piper import LoadedPiperVoice
from duplex.worker.catalog import builtin_catalog

Int16Array = npt.NDArray[np.int16]
# One sentence with no comma: Piper's pauses at commas and between sentences often last
# longer than 300 ms as the VADs hear them, and would rightly split the speech in two.
TEXT = "The weather is lovely today so let us go for a walk in the park."
MIN_SPEECH_MS = 100
MIN_SILENCE_MS = 300
LEAD_S = 1.0  # silence before the speech


@pytest.fixture(scope="module")
def piper_speech() -> Iterator[Int16Array]:
    """TEXT spoken by the bundled en_US-joe-medium voice, int16 at 22050 Hz."""
    voice = adapter_for("piper").load(
        builtin_catalog().get("piper-en-joe-medium"), AdapterOptions(onnx_threads=1)
    )
    assert isinstance(voice, LoadedPiperVoice) and voice.sample_rate == 22050
    yield np.concatenate(list(voice.synthesize(TEXT)))
    voice.close()


@pytest.fixture(scope="module")
def silero_model() -> SileroModel:
    """One loaded silero model shared by the module's detectors."""
    return SileroModel()


def _events(
    engine: str, rate: int, audio: Int16Array, silero_model: SileroModel, aggressiveness: int = 2
) -> list[SpeechEvent]:
    vad = make_vad(engine, aggressiveness=aggressiveness, threshold=0.5, silero_model=silero_model)
    mic = MicInput(rate, vad, SpeechTracker(MIN_SPEECH_MS, MIN_SILENCE_MS))
    size = frame_bytes(rate)
    pcm = audio.astype("<i2").tobytes()
    pcm += bytes(-len(pcm) % size)
    events: list[SpeechEvent] = []
    for i in range(0, len(pcm), size):
        events += mic.push(PcmFrame(pcm[i : i + size], rate))
    return events


def _started(events: list[SpeechEvent]) -> int:
    return sum(isinstance(e, SpeechStarted) for e in events)


def _noise(rate: int, seconds: float, dbfs: float) -> Int16Array:
    """White Gaussian noise with an RMS of ``dbfs`` relative to full scale."""
    rms = 32768 * 10 ** (dbfs / 20)
    noise = np.random.default_rng(0).normal(0.0, rms, round(rate * seconds))
    return noise.clip(-32768, 32767).astype(np.int16)


def _tone(rate: int, seconds: float, dbfs: float, hz: float = 440.0) -> Int16Array:
    """A steady sine with an RMS of ``dbfs`` relative to full scale."""
    peak = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    t = np.arange(round(rate * seconds)) / rate
    tone: Int16Array = (peak * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return tone


@pytest.mark.parametrize("engine", ["webrtc", "silero"])
@pytest.mark.parametrize("rate", [16000, 48000])
def test_piper_speech_after_a_second_of_silence_is_one_utterance(
    engine: str, rate: int, piper_speech: Int16Array, silero_model: SileroModel
) -> None:
    """One SpeechStarted with its onset at 1 s (±150 ms), one SpeechEnded after the speech,
    carrying the speech's audio at 16 kHz."""
    speech = soxr.resample(piper_speech, 22050, rate)
    silence = np.zeros(round(rate * LEAD_S), dtype=np.int16)
    events = _events(engine, rate, np.concatenate([silence, speech, silence]), silero_model)

    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    assert abs(started.onset_ms - 1000) <= 150
    assert started.decided_ms - started.onset_ms >= MIN_SPEECH_MS
    speech_end_ms = 1000 + len(speech) * 1000 / rate
    # Piper ends on a short trailing silence: the end lies within the clip's last 300 ms,
    # or in the window that straddles the clip's end.
    assert speech_end_ms - 300 <= ended.end_ms <= speech_end_ms + 32
    assert ended.audio is not None and ended.audio.sample_rate == 16000
    assert ended.audio.duration_ms == pytest.approx(ended.end_ms - ended.onset_ms + 300)


@pytest.mark.parametrize("engine", ["webrtc", "silero"])
@pytest.mark.parametrize("rate", [16000, 48000])
def test_digital_silence_is_not_speech(engine: str, rate: int, silero_model: SileroModel) -> None:
    """Three seconds of zeros give no event with either engine."""
    assert _events(engine, rate, np.zeros(3 * rate, dtype=np.int16), silero_model) == []


@pytest.mark.parametrize(
    ("signal", "dbfs"), [("noise", -30.0), ("noise", -20.0), ("tone", -20.0), ("tone", -6.0)]
)
def test_silero_rejects_white_noise_and_a_steady_tone(
    signal: str, dbfs: float, silero_model: SileroModel
) -> None:
    """With silero, white noise and a 440 Hz tone never start speech."""
    audio = _noise(16000, 3.0, dbfs) if signal == "noise" else _tone(16000, 3.0, dbfs)
    assert _started(_events("silero", 16000, audio, silero_model)) == 0


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_webrtc_takes_a_steady_tone_for_speech(
    aggressiveness: int, silero_model: SileroModel
) -> None:
    """webrtc starts speech on a 440 Hz tone at -20 dBFS at every aggressiveness."""
    events = _events("webrtc", 16000, _tone(16000, 3.0, -20.0), silero_model, aggressiveness)
    assert _started(events) >= 1


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_webrtc_takes_loud_white_noise_for_speech(
    aggressiveness: int, silero_model: SileroModel
) -> None:
    """webrtc starts speech on white noise at -20 dBFS at every aggressiveness."""
    events = _events("webrtc", 16000, _noise(16000, 3.0, -20.0), silero_model, aggressiveness)
    assert _started(events) >= 1


@pytest.mark.parametrize(("aggressiveness", "is_speech"), [(0, True), (1, True), (2, False)])
def test_webrtc_on_white_noise_at_minus_30_dbfs_depends_on_aggressiveness(
    aggressiveness: int, is_speech: bool, silero_model: SileroModel
) -> None:
    """At -30 dBFS, noise is speech for webrtc at aggressiveness 0 and 1, not at 2 (the
    default): the line between noise and speech is a level, not a kind of sound."""
    events = _events("webrtc", 16000, _noise(16000, 3.0, -30.0), silero_model, aggressiveness)
    assert (_started(events) >= 1) is is_speech
