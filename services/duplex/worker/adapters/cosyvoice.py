"""CosyVoice2 (the ``cosyvoice2-eu`` package's bundled runtime, optional extra): streaming
synthesis and zero-shot voices.

The operator provides the model directory (``params["model_dir"]``; README, "Bringing GPU
model weights"): ``cosyvoice2.yaml``, ``llm.pt``, ``flow.pt``, ``hift.pt``,
``campplus.onnx`` (speaker embedding), ``speech_tokenizer_v2.onnx``, the LLM backbone's
``CosyVoice-BlankEN/`` and optionally ``spk2info.pt`` (built-in speakers). The runtime's
``CosyVoice2`` class loads it (the engine); this module only consumes the engine's
documented parts, so a test can inject a small engine built from the runtime's own
``CosyVoice2Model`` (see tests/integration/tiny_models.py):

- ``engine.sample_rate`` (24 kHz);
- ``engine.frontend.text_normalize`` / ``_extract_text_token`` (text to LLM tokens, what
  every ``inference_*`` method of the runtime does first) and ``frontend_cross_lingual``
  (reference audio to prompt tokens, features and speaker embedding), ``spk2info``;
- ``engine.model.tts(..., stream=True)``: dicts with ``tts_speech`` (1, n) float tensors,
  about one second each, the first after ~25 LLM tokens.

Zero-shot uses the runtime's cross-lingual mode: the session's reference recording has no
transcript, and that mode conditions on the audio alone. Its conditioning (speech tokens,
features, speaker embedding) is computed once per distinct recording and cached by content
hash (:mod:`.zero_shot`).

One clause at a time per model: the runtime keeps per-generation state in dictionaries
on the model, and a clause abandoned early (barge-in) leaves its LLM thread running to the
end; the next clause sweeps what such a clause left behind.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio.wav import decode_wav
from duplex.worker.adapters.base import AdapterOptions, AdapterUnavailable, Int16Array, Voice
from duplex.worker.adapters.model_dir import require_model_dir
from duplex.worker.adapters.torch_runtime import import_torch, release_memory
from duplex.worker.adapters.zero_shot import MAX_REFERENCE_S, ConditioningCache, ReferenceAudio
from duplex.worker.catalog import ModelSpec

INSTALL_HINT = (
    "install the optional runtime: pip install --no-deps cosyvoice2-eu==0.2.8 plus the "
    "requirements the GPU image lists (README, 'Bringing GPU model weights')"
)
REQUIRED_FILES = (
    "cosyvoice2.yaml",
    "llm.pt",
    "flow.pt",
    "hift.pt",
    "campplus.onnx",
    "speech_tokenizer_v2.onnx",
)
DEFAULT_REFERENCE_FILE = "reference.wav"
PROMPT_RATE = 16000  # the runtime's frontends take the prompt at 16 kHz
Conditioning = Mapping[str, Any]  # the runtime's model inputs, less the text
EngineFactory = Callable[[Path, ModelSpec], Any]
"""Builds the runtime engine from a checked model directory (injectable for tests)."""


def check_model_dir(model_id: str, model_dir: str | None) -> Path:
    """The model directory, or FileNotFoundError naming the missing piece."""
    return require_model_dir(
        model_id,
        model_dir,
        env_var="COSYVOICE_MODEL_DIR",
        required=REQUIRED_FILES,
        holds="a CosyVoice2 directory",
    )


def load_runtime_engine(root: Path, spec: ModelSpec) -> Any:
    """The runtime's own loader: ``CosyVoice2(model_dir)`` (hyperpyyaml config, the three
    checkpoints, the ONNX frontends). fp16 only when asked and on a GPU."""
    try:
        module = importlib.import_module("cosyvoice.cli.cosyvoice")
    except ImportError as exc:
        raise AdapterUnavailable(
            f"model {spec.model_id} needs the CosyVoice2 runtime ({exc}); {INSTALL_HINT}"
        ) from exc
    fp16 = spec.params.get("fp16", "false").lower() == "true"
    return module.CosyVoice2(str(root), load_jit=False, load_trt=False, fp16=fp16)


class CosyVoiceVoice:
    """A loaded CosyVoice2 engine: its default voice, and per-session zero-shot voices."""

    def __init__(
        self,
        model_id: str,
        engine: Any,
        torch: Any,
        *,
        default: Conditioning,
        max_reference_s: float = MAX_REFERENCE_S,
    ) -> None:
        self.model_id = model_id
        self.sample_rate = int(engine.sample_rate)
        self.device = str(getattr(engine.model, "device", "cpu"))
        self.max_reference_s = max_reference_s
        self.cache: ConditioningCache[Conditioning] = ConditioningCache()
        self._engine: Any | None = engine
        self._torch: Any | None = torch
        self._default = default
        self._lock = threading.Lock()  # one clause at a time on this engine
        self._closed = threading.Event()

    # -- the Voice contract (default voice) ---------------------------------------------

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        """Yield int16 chunks of ``text`` in the default voice, as the runtime makes them."""
        return self.stream(text, self._default)

    def close(self) -> None:
        """Drop the engine and the cached conditioning and return GPU memory."""
        self._closed.set()
        with self._lock:
            self._engine = None
            self.cache.clear()
            self._default = {}
            torch, self._torch = self._torch, None
        release_memory(torch, self.device)

    # -- per session ------------------------------------------------------------------

    def session_voice(
        self, *, reference: ReferenceAudio | None = None, language: str | None = None
    ) -> Voice:
        """A voice for one session, conditioned on ``reference`` when given. The runtime
        finds each sentence's language itself, so ``language`` changes nothing."""
        conditioning = self._default if reference is None else self.conditioning(reference)
        return _SessionVoice(self, conditioning)

    def conditioning(self, reference: ReferenceAudio) -> Conditioning:
        """The model inputs for ``reference``, from the cache when seen before."""
        reference.check(max_s=self.max_reference_s)
        return self.cache.get_or_compute(reference.digest(), lambda: self._condition(reference))

    def stream(self, text: str, conditioning: Conditioning) -> Iterator[Int16Array]:
        """Yield int16 chunks of ``text`` spoken with ``conditioning``."""
        text = text.strip()
        if not text:
            return
        with self._lock:
            engine = self._require()
            frontend = engine.frontend
            for segment in frontend.text_normalize(text, split=True, text_frontend=True):
                if self._closed.is_set():
                    return
                tokens, tokens_len = frontend._extract_text_token(segment)
                _sweep_abandoned(engine.model)
                inputs = {**conditioning, "text": tokens, "text_len": tokens_len}
                outputs = engine.model.tts(**inputs, stream=True)
                try:
                    for output in outputs:
                        if self._closed.is_set():
                            return
                        audio = _to_int16(output["tts_speech"])
                        if audio.size:
                            yield audio
                finally:
                    outputs.close()

    # -- internals -----------------------------------------------------------------------

    def _condition(self, reference: ReferenceAudio) -> Conditioning:
        torch = self._torch
        if torch is None:
            raise RuntimeError(f"voice {self.model_id} is closed")
        prompt = torch.from_numpy(reference.samples_at(PROMPT_RATE)).unsqueeze(0)
        with self._lock:
            engine = self._require()
            inputs = dict(engine.frontend.frontend_cross_lingual("", prompt, self.sample_rate, ""))
        inputs.pop("text", None)
        inputs.pop("text_len", None)
        return inputs

    def _require(self) -> Any:
        engine = self._engine
        if engine is None:
            raise RuntimeError(f"voice {self.model_id} is closed")
        return engine


class _SessionVoice:
    """One session's voice on a shared :class:`CosyVoiceVoice` (its own conditioning)."""

    def __init__(self, parent: CosyVoiceVoice, conditioning: Conditioning) -> None:
        self.model_id = parent.model_id
        self.sample_rate = parent.sample_rate
        self._parent = parent
        self._conditioning = conditioning

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        return self._parent.stream(text, self._conditioning)

    def close(self) -> None:
        """Nothing of its own to free: the engine belongs to the worker's model manager."""


def _sweep_abandoned(model: Any) -> None:
    """Drop the runtime's per-generation entries of clauses closed early whose LLM thread
    has finished. Called under the voice's lock, when no clause of ours is running, so
    every finished entry is an orphan (the runtime pops its own only at a clause's end)."""
    ended = getattr(model, "llm_end_dict", None)
    if not ended:
        return
    with model.lock:
        for key in [k for k, done in ended.items() if done]:
            for table in ("tts_speech_token_dict", "llm_end_dict", "hift_cache_dict"):
                getattr(model, table, {}).pop(key, None)


def _to_int16(speech: Any) -> Int16Array:
    audio = np.asarray(speech.detach().float().cpu().numpy(), dtype=np.float32).ravel()
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


class CosyVoiceAdapter:
    """Loads CosyVoice2 from ``params["model_dir"]``; AdapterUnavailable without the runtime.

    Params: ``model_dir``, ``speaker`` (a built-in speaker of ``spk2info.pt``), ``fp16``
    (``true`` on a GPU), ``max_reference_s``. ``engine_factory`` replaces the runtime's
    loader (tests inject a small engine; production uses :func:`load_runtime_engine`).
    """

    name = "cosyvoice2"

    def __init__(self, engine_factory: EngineFactory | None = None) -> None:
        self._factory = engine_factory or load_runtime_engine

    def load(self, spec: ModelSpec, options: AdapterOptions) -> CosyVoiceVoice:
        """Check the directory, build the engine, choose the default voice."""
        root = check_model_dir(spec.model_id, spec.params.get("model_dir"))
        torch = import_torch(spec.model_id, INSTALL_HINT)
        if options.require_cuda and not torch.cuda.is_available():
            raise RuntimeError("CUDA was required but torch sees no usable GPU")
        engine = self._factory(root, spec)
        rate = int(engine.sample_rate)
        voice = CosyVoiceVoice(
            spec.model_id,
            engine,
            torch,
            default={},
            max_reference_s=float(spec.params.get("max_reference_s", str(MAX_REFERENCE_S))),
        )
        try:
            if rate != spec.native_sample_rate:
                raise ValueError(
                    f"{spec.model_id}: CosyVoice2 rate {rate} Hz differs from the catalog's "
                    f"{spec.native_sample_rate} Hz"
                )
            voice._default = _default_conditioning(spec, root, engine, voice)
        except BaseException:
            voice.close()
            raise
        return voice


def _default_conditioning(
    spec: ModelSpec, root: Path, engine: Any, voice: CosyVoiceVoice
) -> Conditioning:
    speakers: dict[str, Any] = dict(getattr(engine.frontend, "spk2info", {}) or {})
    wanted = spec.params.get("speaker")
    if wanted and wanted not in speakers:
        known = ", ".join(sorted(speakers)) or "none"
        raise ValueError(f"{spec.model_id}: unknown speaker {wanted!r}; built-in: {known}")
    if speakers:
        embedding = speakers[wanted or next(iter(speakers))]["embedding"]
        return {"llm_embedding": embedding, "flow_embedding": embedding}
    reference_path = root / DEFAULT_REFERENCE_FILE
    if reference_path.is_file():
        frame = decode_wav(reference_path.read_bytes())
        return voice.conditioning(ReferenceAudio(frame.pcm, frame.sample_rate))
    raise FileNotFoundError(
        f"{spec.model_id}: no default voice: {root} has neither spk2info.pt (built-in "
        f"speakers) nor {DEFAULT_REFERENCE_FILE} (a reference recording)"
    )
