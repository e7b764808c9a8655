"""Piper (VITS ONNX) voices, e.g. the bundled en_US-joe-medium."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
from piper import PiperVoice
from piper.config import PiperConfig, SynthesisConfig

from duplex.worker.adapters.base import AdapterOptions, Int16Array, Voice
from duplex.worker.adapters.onnx_session import active_provider, open_session, open_wide_session
from duplex.worker.catalog import ModelSpec

SEAM_TAIL_S = 0.03
"""Silence kept after the last sound of a clause that ends between two words.

Piper ends every text as a sentence, with 0.1-0.25 s of trailing silence; where the text was
cut between words (an utterance's short first clause), that silence and the next clause's
lead-in made a pause in mid-phrase: "The quick brown | fox jumps over the lazy dog." in two
pieces was 0.21 s longer than in one. Trimming the first piece's tail to this takes 0.1-0.15 s
of it away; a clause that ends in punctuation keeps Piper's own pause."""

SEAM_FADE_S = 0.01  # the kept tail fades out to zero: no click where the audio stops
SEAM_SILENCE_LEVEL = 330  # |sample| below this (-40 dBFS) counts as silence


class LoadedPiperVoice:
    """A Piper voice behind the :class:`~duplex.worker.adapters.base.Voice` contract.

    Thread-safe without a lock of ours: piper serialises its espeak-ng phonemizer with its
    own module lock, and ``InferenceSession.run`` is thread-safe. Yields one chunk per
    sentence (Piper's unit), as soon as each is synthesized. ``wide``, when given, is the
    same model on a session with more intra-op threads (:meth:`synthesize_wide`).
    """

    def __init__(self, model_id: str, voice: PiperVoice, wide: PiperVoice | None = None) -> None:
        self.model_id = model_id
        self.sample_rate: int = voice.config.sample_rate
        self._voice: PiperVoice | None = voice
        self._wide: PiperVoice | None = wide
        self._closed = threading.Event()

    @property
    def session(self) -> onnxruntime.InferenceSession:
        """The onnxruntime session (for inspection: providers, thread options)."""
        return self._require().session

    @property
    def provider(self) -> str:
        """The execution provider that really runs the model."""
        return active_provider(self.session)

    @property
    def wide_session(self) -> onnxruntime.InferenceSession | None:
        """The wide session (None: this voice has none)."""
        self._require()
        return None if self._wide is None else self._wide.session

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        """Yield int16 mono audio, one chunk per sentence of ``text``."""
        return self._chunks(self._require(), text)

    def synthesize_wide(self, text: str) -> Iterator[Int16Array]:
        """:meth:`synthesize` on the wide session (the narrow one if there is none)."""
        voice = self._require()
        return self._chunks(self._wide or voice, text)

    def at_speed(self, speed: float) -> Voice:
        """This voice at another speaking rate (Piper's length_scale divided by ``speed``)."""
        return _PiperAtSpeed(self, speed)

    def _chunks(
        self, voice: PiperVoice, text: str, config: SynthesisConfig | None = None
    ) -> Iterator[Int16Array]:
        """One chunk per sentence; a text cut between words loses its trailing silence.

        That trim needs to know the last chunk, so such a text's chunks are yielded one
        behind: it costs nothing for the usual clause of one sentence."""
        held: Int16Array | None = None
        cut = ends_between_words(text)
        for chunk in voice.synthesize(text, syn_config=config):
            if self._closed.is_set():
                return
            audio: Int16Array = np.ascontiguousarray(chunk.audio_int16_array, dtype=np.int16)
            if not audio.size:
                continue
            if not cut:
                yield audio
                continue
            if held is not None:
                yield held
            held = audio
        if held is not None and not self._closed.is_set():
            yield trim_seam_tail(held, self.sample_rate)

    def close(self) -> None:
        """Drop the session; onnxruntime frees its memory (and its CUDA arena) with it."""
        self._closed.set()
        self._voice = None
        self._wide = None
        gc.collect()

    def _require(self) -> PiperVoice:
        voice = self._voice
        if voice is None:
            raise RuntimeError(f"voice {self.model_id} is closed")
        return voice


def ends_between_words(text: str) -> bool:
    """Whether ``text`` stops mid-phrase: its last visible character is a letter or digit."""
    stripped = text.rstrip()
    return bool(stripped) and stripped[-1].isalnum()


def trim_seam_tail(audio: Int16Array, sample_rate: int) -> Int16Array:
    """``audio`` cut :data:`SEAM_TAIL_S` after its last sound, the kept tail faded out.

    Audio with no sound at all, or with less silence than that at its end, is returned as is.
    """
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) >= SEAM_SILENCE_LEVEL)
    if not loud.size:
        return audio
    end = int(loud[-1]) + 1 + int(SEAM_TAIL_S * sample_rate)
    if end >= audio.size:
        return audio
    out: Int16Array = audio[:end].copy()
    fade = min(end, int(SEAM_FADE_S * sample_rate))
    if fade:
        ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32)
        out[-fade:] = (out[-fade:].astype(np.float32) * ramp).astype(np.int16)
    return out


class _PiperAtSpeed:
    """One session's view of a :class:`LoadedPiperVoice` at another speaking rate."""

    def __init__(self, voice: LoadedPiperVoice, speed: float) -> None:
        self.model_id = voice.model_id
        self.sample_rate = voice.sample_rate
        self._voice = voice
        length_scale = voice._require().config.length_scale / speed
        self._config = SynthesisConfig(length_scale=length_scale)

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        return self._voice._chunks(self._voice._require(), text, self._config)

    def synthesize_wide(self, text: str) -> Iterator[Int16Array]:
        voice = self._voice
        return voice._chunks(voice._wide or voice._require(), text, self._config)

    def close(self) -> None:
        """Nothing: the model belongs to the voice this view was made from."""


class PiperAdapter:
    """Loads Piper voices from ``params["model_path"]`` and ``params["config_path"]``."""

    name = "piper"

    def load(self, spec: ModelSpec, options: AdapterOptions) -> LoadedPiperVoice:
        """Build the voice with our own session (thread count, providers) instead of
        ``PiperVoice.load``, which would first open a default session on every core."""
        model_path = Path(spec.params["model_path"])
        config_path = Path(spec.params.get("config_path") or f"{model_path}.json")
        with config_path.open(encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        if config.sample_rate != spec.native_sample_rate:
            raise ValueError(
                f"{spec.model_id}: voice rate {config.sample_rate} Hz differs from the "
                f"catalog's {spec.native_sample_rate} Hz"
            )
        session = open_session(model_path, options, model_id=spec.model_id)
        wide = open_wide_session(model_path, options, session, model_id=spec.model_id)
        return LoadedPiperVoice(
            spec.model_id,
            PiperVoice(session=session, config=config),
            None if wide is None else PiperVoice(session=wide, config=config),
        )
