"""The adapter contract: how the worker loads a model and synthesizes with it.

An adapter turns a :class:`~duplex.worker.catalog.ModelSpec` into a loaded :class:`Voice`.
Adding an engine means one new module in this package, one entry in :func:`adapter_for`
and one catalog entry.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

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


@runtime_checkable
class WideVoice(Protocol):
    """A voice that can also run one job on more cores (a second, wider engine session).

    The scheduler uses it for a job that would otherwise leave cores idle: the only job
    running, with nothing queued. Several threads per job cost a little more CPU per
    audio-second than one, so a busy worker runs every job on the narrow session.
    """

    def synthesize_wide(self, text: str) -> Iterator[Int16Array]:
        """Like ``synthesize``, on the wide session."""
        ...


MIN_SPEED, MAX_SPEED = 0.25, 4.0
"""The speaking rates a session may ask for (SessionOpen.speed; OpenAI's range)."""


@runtime_checkable
class SpeedVoice(Protocol):
    """A voice that can speak faster or slower than its own rate (the ``speed`` capability).

    ``at_speed`` gives one session's view of the loaded voice: it shares the model (its
    ``close`` frees nothing: the model manager closes the voice itself) and keeps
    ``synthesize_wide`` when the voice has it.
    """

    def at_speed(self, speed: float) -> Voice:
        """This voice speaking ``speed`` times its own rate (2.0: half as long)."""
        ...


class Device(Enum):
    """Where a worker runs its models (the config's ``worker.device``)."""

    AUTO = "auto"  # CUDA when onnxruntime has it and it really runs, else CPU
    CPU = "cpu"  # never ask for CUDA
    CUDA = "cuda"  # CUDA or a failed load: never a silent CPU fallback


@dataclass(frozen=True)
class AdapterOptions:
    """Engine settings that apply to every model a worker loads.

    ``lone_job_threads`` above ``onnx_threads`` gives each model a second session with that
    many intra-op threads, for jobs that run alone (see :class:`WideVoice`); 0 or a value
    not above ``onnx_threads`` gives none. It defaults to the machine's cores: measured on 2
    cores, a lone first clause came 20-25% sooner on 2 threads (no spinning) than on one,
    for the same CPU time. ``require_cuda`` makes a load fail unless CUDA
    really runs the model (the config's ``device: cuda``); ``use_cuda`` false never asks
    for it (``device: cpu``).
    """

    onnx_threads: int = 1
    use_cuda: bool = True
    lone_job_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    require_cuda: bool = False

    def __post_init__(self) -> None:
        if self.onnx_threads < 1:
            raise ValueError(f"onnx_threads must be >= 1, got {self.onnx_threads}")
        if self.lone_job_threads < 0:
            raise ValueError(f"lone_job_threads must be >= 0, got {self.lone_job_threads}")
        if self.require_cuda and not self.use_cuda:
            raise ValueError("require_cuda needs use_cuda")

    @classmethod
    def for_device(
        cls, device: Device, *, onnx_threads: int = 1, lone_job_threads: int | None = None
    ) -> AdapterOptions:
        """The options for ``worker.device`` (``use_cuda`` and ``require_cuda`` from it)."""
        if lone_job_threads is None:
            lone_job_threads = os.cpu_count() or 1
        return cls(
            onnx_threads=onnx_threads,
            use_cuda=device is not Device.CPU,
            lone_job_threads=lone_job_threads,
            require_cuda=device is Device.CUDA,
        )

    @property
    def wide_threads(self) -> int:
        """Intra-op threads of the wide session; 0 when the model gets none."""
        return self.lone_job_threads if self.lone_job_threads > self.onnx_threads else 0


class CudaNotUsed(Exception):
    """CUDA was required (``device: cuda``) but the model does not run on it."""


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
        "xtts": ("duplex.worker.adapters.xtts", "XttsAdapter"),
        "cosyvoice2": ("duplex.worker.adapters.cosyvoice", "CosyVoiceAdapter"),
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
