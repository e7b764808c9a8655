"""onnxruntime sessions built the same way for every ONNX adapter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnxruntime

from duplex.worker.adapters.base import AdapterOptions, CudaNotUsed

_LOG = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def session_options(threads: int, *, spin: bool = True) -> onnxruntime.SessionOptions:
    """``threads`` intra-op threads and one inter-op thread: several workers share few cores.

    ``spin`` False stops the intra-op pool's threads from busy-waiting between operators:
    a wide session's helpers would otherwise burn the cores that other jobs need.
    """
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def providers(options: AdapterOptions, available: list[str] | None = None) -> list[Any]:
    """CUDA first when asked for and built in (or required), CPU always as the fallback.

    ``available`` is onnxruntime's build list (onnxruntime-gpu lists CUDA even without a
    GPU): it only decides whether to ask; what runs is read back from the session.
    """
    built = onnxruntime.get_available_providers() if available is None else available
    chosen: list[Any] = []
    if options.require_cuda or (options.use_cuda and CUDA_PROVIDER in built):
        chosen.append((CUDA_PROVIDER, {"cudnn_conv_algo_search": "HEURISTIC"}))
    chosen.append(CPU_PROVIDER)
    return chosen


def open_session(
    model_path: str | Path, options: AdapterOptions, *, model_id: str
) -> onnxruntime.InferenceSession:
    """Create the model's session and log which provider really runs it.

    onnxruntime-gpu lists CUDA as available even where the CUDA libraries are missing and
    then silently falls back to CPU, so only ``get_providers()`` of the session tells.
    Raises :class:`CudaNotUsed` when CUDA is required and the session runs on anything else.
    """
    asked = providers(options)
    session = onnxruntime.InferenceSession(
        str(model_path),
        sess_options=session_options(options.onnx_threads),
        providers=asked,
    )
    active = active_provider(session)
    cuda_asked = any(p == CUDA_PROVIDER or p[0] == CUDA_PROVIDER for p in asked)
    fields = {
        "model_id": model_id,
        "provider": active,
        "intra_op_threads": options.onnx_threads,
        "cuda_requested": cuda_asked,
    }
    if options.require_cuda and active != CUDA_PROVIDER:
        raise CudaNotUsed(
            f"{model_id}: device cuda is required but onnxruntime runs it on {active} "
            f"(onnxruntime {onnxruntime.__version__}, built with "
            f"{', '.join(onnxruntime.get_available_providers())}); install onnxruntime-gpu "
            "with the CUDA and cuDNN libraries it needs, or set device: auto or cpu"
        )
    if cuda_asked and active != CUDA_PROVIDER:
        _LOG.warning("onnx session fell back from CUDA", extra=fields)
    else:
        _LOG.info("onnx session ready", extra=fields)
    return session


def open_wide_session(
    model_path: str | Path,
    options: AdapterOptions,
    narrow: onnxruntime.InferenceSession,
    *,
    model_id: str,
) -> onnxruntime.InferenceSession | None:
    """A second CPU session with ``options.wide_threads`` intra-op threads, for lone jobs.

    None when the options ask for none, or when ``narrow`` runs on CUDA (a GPU gains
    nothing from more CPU threads).
    """
    threads = options.wide_threads
    if not threads or active_provider(narrow) == CUDA_PROVIDER:
        return None
    session = onnxruntime.InferenceSession(
        str(model_path),
        sess_options=session_options(threads, spin=False),
        providers=[CPU_PROVIDER],
    )
    _LOG.info(
        "onnx wide session ready",
        extra={"model_id": model_id, "provider": CPU_PROVIDER, "intra_op_threads": threads},
    )
    return session


def active_provider(session: onnxruntime.InferenceSession) -> str:
    """The provider that runs the session's first node set (CUDA or CPU)."""
    providers_list: list[str] = session.get_providers()
    return providers_list[0]
