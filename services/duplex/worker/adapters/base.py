"""The adapter contract: how the worker loads a model and synthesizes with it.

An adapter turns a :class:`~duplex.worker.catalog.ModelSpec` into a loaded :class:`Voice`.
Adding an engine means one new module in this package, one entry in :func:`adapter_for`
and one catalog entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from duplex.worker.catalog import ModelSpec

Int16Array = npt.NDArray[np.int16]


class Voice(Protocol):
    """A loaded model, shared by every session of the worker.

    ``synthesize`` blocks and is called from inference threads, possibly from several at
    once on the same voice; implementations serialise whatever is not thread-safe.
    """

    model_id: str
    sample_rate: int  # native rate of the chunks synthesize yields

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        """Yield int16 mono chunks as soon as each is ready."""
        ...

    def close(self) -> None:
        """Free the model's memory (and the CUDA cache on a GPU)."""
        ...


@dataclass(frozen=True)
class AdapterOptions:
    """Engine settings that apply to every model a worker loads."""

    onnx_threads: int = 1
    use_cuda: bool = True

    def __post_init__(self) -> None:
        if self.onnx_threads < 1:
            raise ValueError(f"onnx_threads must be >= 1, got {self.onnx_threads}")


class Adapter(Protocol):
    """Loads models of one family ("piper", "kokoro", "tone")."""

    name: str

    def load(self, spec: ModelSpec, options: AdapterOptions) -> Voice:
        """Load the model described by ``spec``; blocking."""
        ...


class AdapterUnavailable(Exception):
    """The adapter's engine cannot be used here (e.g. an optional package is missing)."""


# family -> (module, class); imported lazily so an optional engine costs nothing unless used.
_ADAPTERS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "piper": ("duplex.worker.adapters.piper", "PiperAdapter"),
        "kokoro": ("duplex.worker.adapters.kokoro", "KokoroAdapter"),
        "tone": ("duplex.worker.adapters.tone", "ToneAdapter"),
    }
)


def adapter_families() -> tuple[str, ...]:
    """The families :func:`adapter_for` knows."""
    return tuple(_ADAPTERS)


def adapter_for(family: str) -> Adapter:
    """Return a fresh adapter for ``family``; raises KeyError for an unknown family."""
    try:
        module_name, class_name = _ADAPTERS[family]
    except KeyError:
        raise KeyError(
            f"no adapter for family {family!r}; known: {', '.join(sorted(_ADAPTERS))}"
        ) from None
    module = importlib.import_module(module_name)
    adapter: Adapter = getattr(module, class_name)()
    return adapter
