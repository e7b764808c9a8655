"""What the PyTorch adapters (xtts, cosyvoice2) share: importing torch, choosing the device,
and handing GPU memory back.

torch is imported lazily: a CPU worker (Piper, Kokoro) never loads it. The torch/torchaudio
pair is torch 2.13 with torchaudio 2.11's pure-PyTorch functions (``functional.resample``,
``transforms.MelSpectrogram``, ``compliance.kaldi.fbank``) and its compiled extension
removed at install time (see README, "Bringing GPU model weights"): no torchaudio release
is built for torch 2.13, and torchaudio treats a missing extension library as "not
built", which those functions do not need.
"""

from __future__ import annotations

import gc
import importlib
from types import ModuleType
from typing import Any

from duplex.worker.adapters.base import AdapterOptions, AdapterUnavailable

TORCHAUDIO_HINT = (
    "torchaudio must import without its compiled extension: "
    "pip install --no-deps torchaudio==2.11.0, then delete the .so files in torchaudio/lib "
    "(the Makefile's venv set-up and the GPU image do this)"
)


def import_torch(model_id: str, install_hint: str) -> ModuleType:
    """torch and torchaudio, or AdapterUnavailable saying what to install."""
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        raise AdapterUnavailable(f"model {model_id} needs torch ({exc}); {install_hint}") from exc
    try:
        importlib.import_module("torchaudio")
    except ImportError as exc:
        raise AdapterUnavailable(
            f"model {model_id} needs torchaudio ({exc}); {install_hint}"
        ) from exc
    except OSError as exc:  # the compiled extension built for another torch
        raise AdapterUnavailable(f"model {model_id}: {exc}; {TORCHAUDIO_HINT}") from exc
    return torch


def pick_device(torch: Any, options: AdapterOptions, requested: str | None = None) -> str:
    """``cuda`` (the first visible GPU: CUDA_VISIBLE_DEVICES pins the worker to one) when
    allowed and present, else ``cpu``. ``requested`` (a spec's ``device`` param) wins;
    ``device: cuda`` without a usable GPU is an error, never a silent CPU run."""
    cuda_ok = bool(torch.cuda.is_available())
    wanted = (requested or "").strip().lower()
    require = bool(getattr(options, "require_cuda", False)) or wanted.startswith("cuda")
    if require and not cuda_ok:
        raise RuntimeError("CUDA was required but torch sees no usable GPU")
    if wanted == "cpu" or not options.use_cuda:
        return "cpu"
    if wanted.startswith("cuda"):
        return wanted
    return "cuda" if cuda_ok else "cpu"


def release_memory(torch: Any | None, device: str) -> None:
    """Collect the dropped model and return its cached blocks to the driver."""
    gc.collect()
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
        # cuBLAS keeps a per-handle workspace (~32 MiB) that empty_cache() does not return;
        # seen left allocated after an unload on an H200.
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear_workspaces is not None:
            clear_workspaces()
