"""GPU detection for the worker's start-up log, through NVML (never torch)."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceInfo:
    """The GPUs this process may use, as CUDA would number them."""

    cuda_visible_devices: str | None
    gpu_count: int
    gpu_names: tuple[str, ...]
    error: str | None = None


def nvml_text(value: Any) -> str:
    """An NVML string as str (older NVML bindings return bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_indices(uuids: Sequence[str], cuda_visible: str | None) -> list[int]:
    """NVML indices of the GPUs CUDA would show this process, in CUDA's order.

    NVML ignores CUDA_VISIBLE_DEVICES, so we mimic CUDA: indices or UUID prefixes, in the
    order given; the list stops at the first entry that matches nothing (or repeats one);
    empty means no GPU. CUDA device k of the process is NVML device ``result[k]``.
    """
    if cuda_visible is None:
        return list(range(len(uuids)))
    chosen: list[int] = []
    for raw in cuda_visible.split(","):
        entry = raw.strip()
        match: int | None = None
        if entry.isdigit() and int(entry) < len(uuids):
            match = int(entry)
        elif entry.startswith(("GPU-", "MIG-")):
            match = next((i for i, uuid in enumerate(uuids) if uuid.startswith(entry)), None)
        if match is None or match in chosen:
            break
        chosen.append(match)
    return chosen


def detect_devices(
    *, environ: Mapping[str, str] | None = None, nvml: Any | None = None
) -> DeviceInfo:
    """Count and name the visible GPUs; never raises (a machine without GPU is normal).

    ``nvml`` defaults to the ``pynvml`` module of nvidia-ml-py; tests pass a fake.
    """
    env = os.environ if environ is None else environ
    cuda_visible = env.get("CUDA_VISIBLE_DEVICES")
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return DeviceInfo(cuda_visible, 0, (), "nvidia-ml-py not installed")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        reason = "NVML library not found" if is_library_not_found(nvml, exc) else str(exc)
        return DeviceInfo(cuda_visible, 0, (), reason)
    try:
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            devices.append(
                (
                    nvml_text(nvml.nvmlDeviceGetName(handle)),
                    nvml_text(nvml.nvmlDeviceGetUUID(handle)),
                )
            )
    except nvml.NVMLError as exc:
        return DeviceInfo(cuda_visible, 0, (), f"NVML query failed: {exc}")
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    names = tuple(devices[i][0] for i in visible_indices([u for _, u in devices], cuda_visible))
    return DeviceInfo(cuda_visible, len(names), names, None)


def is_library_not_found(nvml: Any, exc: BaseException) -> bool:
    """Whether `exc` is NVML's "no driver library here" (a machine without NVIDIA driver)."""
    not_found = getattr(nvml, "NVMLError_LibraryNotFound", None)
    return isinstance(not_found, type) and isinstance(exc, not_found)


def describe(info: DeviceInfo) -> str:
    """One line for the start-up log, e.g. ``GPU 0: NVIDIA H100`` or ``no GPU (...)``."""
    if info.gpu_count:
        return "; ".join(f"GPU {i}: {name}" for i, name in enumerate(info.gpu_names))
    if info.error:
        return f"no GPU ({info.error})"
    if info.cuda_visible_devices is not None:
        return f"no GPU (CUDA_VISIBLE_DEVICES={info.cuda_visible_devices!r})"
    return "no GPU"
