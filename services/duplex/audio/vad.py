"""Voice activity detection on fixed windows of 16 kHz mono PCM: two engines, one interface.

Measured here behind :class:`~duplex.audio.mic.MicInput` with min_speech 100 ms and
min_silence 300 ms (tests/integration/test_audio_vad_speech.py asserts each line):

- ``webrtc`` (:class:`WebRtcVad`, the guide's engine): microseconds a frame; catches Piper
  speech, ignores digital silence, but does not tell speech from noise by kind, only by level:
  a steady 440 Hz tone at -20 dBFS and white noise at -20 dBFS start speech at every
  aggressiveness; white noise at -30 dBFS starts speech at aggressiveness 0 and 1, not at 2
  (the default) or 3. So a hum or a noisy room can barge in.
- ``silero`` (:class:`SileroVad`, silero's ONNX model through onnxruntime, no torch): about
  0.15 ms a 32 ms window on one thread; catches the same speech, ignores silence, and starts
  no speech on white noise (-30 and -20 dBFS) or a 440 Hz tone (-20 and -6 dBFS).

Both hear a pause at a comma or between two Piper sentences as the end of speech now and
then with min_silence 300 ms (silero more often): a false interruption policy must allow it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import webrtcvad

from duplex.audio.frames import FRAME_MS, SAMPLE_WIDTH, frame_samples

VAD_SAMPLE_RATE = 16000  # both engines run at 16 kHz; input is resampled to it
VAD_ENGINES = ("webrtc", "silero")
WEBRTC_RATES = (8000, 16000, 32000, 48000)
WEBRTC_FRAME_MS = (10, 20, 30)
SILERO_WINDOW = 512  # samples at 16 kHz (32 ms): the only window the model takes
SILERO_CONTEXT = 64  # samples of the previous window the model sees before each new one
SILERO_STATE_SHAPE = (2, 1, 128)
SILERO_INSTALL = "pip install --no-deps silero-vad"

Float32Array = npt.NDArray[np.float32]


@runtime_checkable
class VoiceActivityDetector(Protocol):
    """Classifies one window of mono s16le PCM: exactly ``frame_samples`` at ``sample_rate``.

    Detectors may keep state between windows of one stream (silero's recurrent state);
    ``reset()`` forgets it before an unrelated stream.
    """

    @property
    def sample_rate(self) -> int: ...

    @property
    def frame_samples(self) -> int: ...

    def is_speech(self, pcm: bytes) -> bool: ...

    def reset(self) -> None: ...


class WebRtcVad:
    """The guide's VAD (libwebrtc's GMM detector, via webrtcvad-wheels).

    Cheap (microseconds a frame) and good at speech against quiet, but steady tones
    and noise also count as speech: use it where the input is a microphone, not to
    tell speech from noise.
    """

    def __init__(self, aggressiveness: int, sample_rate: int, frame_ms: int = FRAME_MS) -> None:
        if aggressiveness not in range(4):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        if sample_rate not in WEBRTC_RATES:
            raise ValueError(f"webrtcvad supports sample rates {WEBRTC_RATES}, got {sample_rate}")
        if frame_ms not in WEBRTC_FRAME_MS:
            raise ValueError(f"webrtcvad supports frames of {WEBRTC_FRAME_MS} ms, got {frame_ms}")
        self._aggressiveness = aggressiveness
        self._sample_rate = sample_rate
        self._frame_ms = frame_ms
        self._frame_samples = frame_samples(sample_rate, frame_ms)
        self._vad = webrtcvad.Vad(aggressiveness)

    @property
    def frame_ms(self) -> int:
        return self._frame_ms

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frame_samples(self) -> int:
        return self._frame_samples

    @property
    def aggressiveness(self) -> int:
        return self._aggressiveness

    def is_speech(self, pcm: bytes) -> bool:
        expected = self._frame_samples * SAMPLE_WIDTH
        if len(pcm) != expected:
            raise ValueError(
                f"expected one {self._frame_ms} ms frame at {self._sample_rate} Hz "
                f"({expected} bytes), got {len(pcm)} bytes"
            )
        return bool(self._vad.is_speech(pcm, self._sample_rate))

    def reset(self) -> None:
        # libwebrtc adapts its noise model and keeps a hangover count: a new stream starts
        # from a fresh detector.
        self._vad = webrtcvad.Vad(self._aggressiveness)


def silero_model_path() -> Path:
    """The ONNX file inside the installed ``silero-vad`` package (found without importing
    it: the package's ``__init__`` imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None:
        raise FileNotFoundError(
            f"the silero-vad package is not installed: {SILERO_INSTALL} "
            "(--no-deps: its own dependencies pull in torch, which the VAD does not need)"
        )
    if spec.submodule_search_locations:
        package_dir = Path(next(iter(spec.submodule_search_locations)))
    else:
        package_dir = Path(str(spec.origin)).parent
    path = package_dir / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(
            f"silero's model is missing at {path}: reinstall with {SILERO_INSTALL}"
        )
    return path


class SileroModel:
    """silero's ONNX model, loaded once and shared by any number of :class:`SileroVad`.

    ``InferenceSession.run`` is thread-safe and holds no per-stream state (each detector
    passes its own recurrent state), so one session serves every stream.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        model = Path(path) if path is not None else silero_model_path()
        if not model.is_file():
            raise FileNotFoundError(
                f"silero's model is missing at {model}: install it with {SILERO_INSTALL}"
            )
        # Imported here, not at module level: the worker and the CLI import duplex.audio for
        # framing and resampling and should not pay for onnxruntime's import.
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One thread: the VAD runs beside Opus and TTS on a few cores; a window costs ~0.15 ms.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.path = model
        self._session = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(VAD_SAMPLE_RATE, dtype=np.int64)

    def run(self, window: Float32Array, state: Float32Array) -> tuple[float, Float32Array]:
        """Speech probability of ``window`` (context + 512 samples, shape (1, 576)) and the
        model's next recurrent state."""
        out, next_state = self._session.run(None, {"input": window, "state": state, "sr": self._sr})
        return float(np.asarray(out).reshape(-1)[0]), np.asarray(next_state, dtype=np.float32)


class SileroVad:
    """silero-vad (a small recurrent network) on 512-sample windows at 16 kHz.

    Tells speech from noise and steady tones, where webrtcvad does not. As silero's own
    ``OnnxWrapper`` does, each window is fed with the last 64 samples of the previous one
    in front and with the recurrent state the previous window returned, so decisions are
    only right on consecutive windows of one stream (``reset()`` between streams).

    A window is speech when its probability reaches ``threshold``; once in speech, it stays
    speech while the probability stays above ``threshold - 0.15`` (silero's own hysteresis,
    its ``neg_threshold``), so a soft syllable does not split an utterance.
    """

    def __init__(self, threshold: float = 0.5, *, model: SileroModel | None = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self._threshold = threshold
        self._neg_threshold = max(threshold - 0.15, 0.01)
        self._model = model if model is not None else SileroModel()
        self._state = np.zeros(SILERO_STATE_SHAPE, dtype=np.float32)
        self._window = np.zeros((1, SILERO_CONTEXT + SILERO_WINDOW), dtype=np.float32)
        self._speaking = False
        self._last_probability = 0.0

    @property
    def sample_rate(self) -> int:
        return VAD_SAMPLE_RATE

    @property
    def frame_samples(self) -> int:
        return SILERO_WINDOW

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def last_probability(self) -> float:
        """The model's speech probability for the last window (for logs and tuning)."""
        return self._last_probability

    def probability(self, pcm: bytes) -> float:
        """The speech probability of the next window of the stream (advances the state)."""
        expected = SILERO_WINDOW * SAMPLE_WIDTH
        if len(pcm) != expected:
            raise ValueError(
                f"expected one {SILERO_WINDOW}-sample window at {VAD_SAMPLE_RATE} Hz "
                f"({expected} bytes), got {len(pcm)} bytes"
            )
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        # The previous window's last 64 samples stay in front (silero's context).
        self._window[0, :SILERO_CONTEXT] = self._window[0, -SILERO_CONTEXT:]
        self._window[0, SILERO_CONTEXT:] = samples
        probability, self._state = self._model.run(self._window, self._state)
        self._last_probability = probability
        return probability

    def is_speech(self, pcm: bytes) -> bool:
        probability = self.probability(pcm)
        bar = self._neg_threshold if self._speaking else self._threshold
        self._speaking = probability >= bar
        return self._speaking

    def reset(self) -> None:
        self._state = np.zeros(SILERO_STATE_SHAPE, dtype=np.float32)
        self._window.fill(0.0)
        self._speaking = False
        self._last_probability = 0.0


def make_vad(
    engine: str,
    *,
    aggressiveness: int,
    threshold: float,
    silero_model: SileroModel | None = None,
) -> VoiceActivityDetector:
    """A detector at 16 kHz: ``webrtc`` (20 ms frames, ``aggressiveness`` 0-3) or ``silero``
    (512-sample windows, speech ``threshold``; pass ``silero_model`` to share one loaded
    model between sessions)."""
    if engine == "webrtc":
        return WebRtcVad(aggressiveness, VAD_SAMPLE_RATE, FRAME_MS)
    if engine == "silero":
        return SileroVad(threshold, model=silero_model)
    raise ValueError(f"unknown VAD engine {engine!r}: expected one of {', '.join(VAD_ENGINES)}")
