"""XTTS-v2 (coqui-tts, optional extra ``xtts``): streaming synthesis and zero-shot voices.

The operator provides the model directory (``params["model_dir"]``; README, "Bringing GPU
model weights"): ``config.json``, ``model.pth``, ``vocab.json`` and optionally
``speakers_xtts.pth`` (the built-in speakers) and ``reference.wav`` (a default voice for a
model without built-in speakers). It loads with ``Xtts.load_checkpoint`` and streams with
``inference_stream``: float chunks at 24 kHz, which the worker resamples and cuts into
frames like any other voice's.

A session's voice is the default speaker (``params["speaker"]``, else the first built-in
one, else ``reference.wav``), or a zero-shot voice from the session's reference audio
(:mod:`.zero_shot`): GPT conditioning latents and a speaker embedding computed once per
distinct recording and cached by its content hash.

XTTS keeps per-generation state on the model (the prompt embedding its GPT caches), so
one model synthesizes one clause at a time: concurrent sessions take turns clause by
clause.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio.wav import decode_wav
from duplex.worker.adapters.base import AdapterOptions, AdapterUnavailable, Int16Array, Voice
from duplex.worker.adapters.model_dir import require_model_dir
from duplex.worker.adapters.torch_runtime import import_torch, pick_device, release_memory
from duplex.worker.adapters.zero_shot import (
    MAX_REFERENCE_S,
    ConditioningCache,
    ReferenceAudio,
    ReferenceAudioError,
)
from duplex.worker.catalog import ModelSpec

INSTALL_HINT = (
    "install the optional extra: pip install 'duplex[xtts]' && "
    "pip install --no-deps torchaudio==2.11.0 torchcodec==0.17.0 (see README)"
)
REQUIRED_FILES = ("config.json", "model.pth", "vocab.json")
SPEAKERS_FILE = "speakers_xtts.pth"
DEFAULT_REFERENCE_FILE = "reference.wav"
CONDITIONING_RATE = 22050  # what XTTS's own reference loader resamples to


def check_model_dir(model_id: str, model_dir: str | None) -> Path:
    """The model directory, or FileNotFoundError naming the missing piece."""
    return require_model_dir(
        model_id,
        model_dir,
        env_var="XTTS_MODEL_DIR",
        required=REQUIRED_FILES,
        holds=f"an XTTS directory (optionally also {SPEAKERS_FILE})",
    )


@dataclass(frozen=True)
class Conditioning:
    """What XTTS speaks with: GPT conditioning latents and a speaker embedding (tensors)."""

    gpt_cond_latent: Any
    speaker_embedding: Any


class XttsVoice:
    """A loaded XTTS model: its default voice, and per-session zero-shot voices."""

    def __init__(
        self,
        model_id: str,
        model: Any,
        torch: Any,
        *,
        device: str,
        sample_rate: int,
        language: str,
        default: Conditioning,
        stream_chunk_size: int = 20,
        max_reference_s: float = MAX_REFERENCE_S,
    ) -> None:
        self.model_id = model_id
        self.sample_rate = sample_rate
        self.device = device
        self.language = language
        self.stream_chunk_size = stream_chunk_size
        self.max_reference_s = max_reference_s
        self.cache: ConditioningCache[Conditioning] = ConditioningCache()
        self._model: Any | None = model
        self._torch: Any | None = torch
        self._default = default
        self._lock = threading.Lock()  # one generation at a time on this model
        self._closed = threading.Event()

    # -- the Voice contract (default speaker) -------------------------------------------

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        """Yield int16 chunks of ``text`` in the default voice, as the GPT produces them."""
        return self.stream(text, self._default, self.language)

    def close(self) -> None:
        """Drop the model and the cached latents and return GPU memory."""
        self._closed.set()
        with self._lock:  # let a running generation finish its step first
            self._model = None
            self.cache.clear()
            self._default = Conditioning(None, None)
            torch, self._torch = self._torch, None
        release_memory(torch, self.device)

    # -- per session ------------------------------------------------------------------

    def session_voice(
        self, *, reference: ReferenceAudio | None = None, language: str | None = None
    ) -> Voice:
        """A voice for one session: conditioned on ``reference`` (zero-shot) when given,
        speaking ``language`` when given. Blocking on a cache miss (speaker encoder)."""
        conditioning = self._default
        if reference is not None:
            conditioning = self.conditioning(reference)
        return _SessionVoice(self, conditioning, language or self.language)

    def conditioning(self, reference: ReferenceAudio) -> Conditioning:
        """Latents for ``reference``, from the cache when this recording was seen before."""
        reference.check(max_s=self.max_reference_s)
        return self.cache.get_or_compute(reference.digest(), lambda: self._condition(reference))

    def stream(self, text: str, conditioning: Conditioning, language: str) -> Iterator[Int16Array]:
        """Yield int16 chunks of ``text`` spoken with ``conditioning``."""
        text = text.strip()
        if not text:
            return
        with self._lock:
            model = self._require()
            chunks = model.inference_stream(
                text,
                language,
                conditioning.gpt_cond_latent,
                conditioning.speaker_embedding,
                stream_chunk_size=self.stream_chunk_size,
                enable_text_splitting=False,  # the worker already cut the text into clauses
            )
            try:
                for wav in chunks:
                    if self._closed.is_set():
                        return
                    audio = _to_int16(wav)
                    if audio.size:
                        yield audio
            finally:
                chunks.close()

    # -- internals -----------------------------------------------------------------------

    def _condition(self, reference: ReferenceAudio) -> Conditioning:
        torch = self._torch
        if torch is None:
            raise RuntimeError(f"voice {self.model_id} is closed")
        audio = torch.from_numpy(reference.samples_at(CONDITIONING_RATE)).unsqueeze(0)
        with self._lock:
            model = self._require()
            audio = audio.to(self.device)
            try:
                latent = model.get_gpt_cond_latents(
                    audio, CONDITIONING_RATE, length=int(self.max_reference_s)
                )
            except RuntimeError as exc:
                if "too short" in str(exc):
                    raise ReferenceAudioError(str(exc)) from exc
                raise
            embedding = model.get_speaker_embedding(audio, CONDITIONING_RATE)
        return Conditioning(latent, embedding)

    def _require(self) -> Any:
        model = self._model
        if model is None:
            raise RuntimeError(f"voice {self.model_id} is closed")
        return model


class _SessionVoice:
    """One session's voice on a shared :class:`XttsVoice` (its own conditioning)."""

    def __init__(self, parent: XttsVoice, conditioning: Conditioning, language: str) -> None:
        self.model_id = parent.model_id
        self.sample_rate = parent.sample_rate
        self._parent = parent
        self._conditioning = conditioning
        self._language = language

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        return self._parent.stream(text, self._conditioning, self._language)

    def close(self) -> None:
        """Nothing of its own to free: the model belongs to the worker's model manager."""


def _to_int16(wav: Any) -> Int16Array:
    audio = np.asarray(wav.detach().float().cpu().numpy(), dtype=np.float32).ravel()
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


class XttsAdapter:
    """Loads XTTS-v2 from ``params["model_dir"]``; AdapterUnavailable without coqui-tts.

    Params: ``model_dir``, ``speaker`` (a built-in speaker), ``language`` (default
    ``en``), ``stream_chunk_size`` (GPT tokens per chunk, default 20), ``device``
    (``cuda``/``cpu``; default: CUDA when present), ``max_reference_s``.
    """

    name = "xtts"

    def load(self, spec: ModelSpec, options: AdapterOptions) -> XttsVoice:
        """Check the directory, build the model from its config, load the checkpoint."""
        params = spec.params
        root = check_model_dir(spec.model_id, params.get("model_dir"))
        torch = import_torch(spec.model_id, INSTALL_HINT)
        try:
            config_module = importlib.import_module("TTS.tts.configs.xtts_config")
            model_module = importlib.import_module("TTS.tts.models.xtts")
        except ImportError as exc:
            raise AdapterUnavailable(
                f"model {spec.model_id} needs coqui-tts ({exc}); {INSTALL_HINT}"
            ) from exc
        config = config_module.XttsConfig()
        config.load_json(str(root / "config.json"))
        rate = int(config.model_args.output_sample_rate)
        if rate != spec.native_sample_rate:
            raise ValueError(
                f"{spec.model_id}: XTTS rate {rate} Hz differs from the catalog's "
                f"{spec.native_sample_rate} Hz"
            )
        device = pick_device(torch, options, params.get("device"))
        model = model_module.Xtts.init_from_config(config)
        model.load_checkpoint(config, checkpoint_dir=str(root), eval=True, use_deepspeed=False)
        model.to(device)
        voice = XttsVoice(
            spec.model_id,
            model,
            torch,
            device=device,
            sample_rate=rate,
            language=params.get("language", "en"),
            default=Conditioning(None, None),
            stream_chunk_size=int(params.get("stream_chunk_size", "20")),
            max_reference_s=float(params.get("max_reference_s", str(MAX_REFERENCE_S))),
        )
        try:
            voice._default = _default_conditioning(spec, root, model, voice)
        except BaseException:
            voice.close()
            raise
        return voice


def _default_conditioning(
    spec: ModelSpec, root: Path, model: Any, voice: XttsVoice
) -> Conditioning:
    speakers: dict[str, Any] = {}
    manager = getattr(model, "speaker_manager", None)
    if manager is not None:
        speakers = dict(manager.speakers)
    wanted = spec.params.get("speaker")
    if wanted:
        if wanted not in speakers:
            known = ", ".join(sorted(speakers)) or "none"
            raise ValueError(f"{spec.model_id}: unknown speaker {wanted!r}; built-in: {known}")
        return _speaker(speakers[wanted])
    if speakers:
        return _speaker(speakers[next(iter(speakers))])
    reference_path = root / DEFAULT_REFERENCE_FILE
    if reference_path.is_file():
        frame = decode_wav(reference_path.read_bytes())
        return voice.conditioning(ReferenceAudio(frame.pcm, frame.sample_rate))
    raise FileNotFoundError(
        f"{spec.model_id}: no default voice: {root} has neither {SPEAKERS_FILE} (built-in "
        f"speakers) nor {DEFAULT_REFERENCE_FILE} (a reference recording)"
    )


def _speaker(entry: Any) -> Conditioning:
    return Conditioning(entry["gpt_cond_latent"], entry["speaker_embedding"])
