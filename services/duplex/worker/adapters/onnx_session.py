"""onnxruntime sessions built the same way for every ONNX adapter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnxruntime

from duplex.worker.adapters.base import AdapterOptions

_LOG = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def session_options(options: AdapterOptions) -> onnxruntime.SessionOptions:
    """Thread counts from ``options``: several workers share few cores, so no oversubscription."""
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = options.onnx_threads
    so.inter_op_num_threads = 1
    return so


def providers(options: AdapterOptions) -> list[Any]:
    """CUDA first when asked for and built in, CPU always as the fallback."""
    chosen: list[Any] = []
    if options.use_cuda and CUDA_PROVIDER in onnxruntime.get_available_providers():
        chosen.append((CUDA_PROVIDER, {"cudnn_conv_algo_search": "HEURISTIC"}))
    chosen.append(CPU_PROVIDER)
    return chosen


def open_session(
    model_path: str | Path, options: AdapterOptions, *, model_id: str
) -> onnxruntime.InferenceSession:
    """Create the session and log which provider really runs it.

    onnxruntime-gpu lists CUDA as available even where the CUDA libraries are missing and
    then silently falls back to CPU, so only ``get_providers()`` of the session tells.
    """
    session = onnxruntime.InferenceSession(
        str(model_path), sess_options=session_options(options), providers=providers(options)
    )
    active = session.get_providers()[0]
    _LOG.info(
        "onnx session ready",
        extra={
            "model_id": model_id,
            "provider": active,
            "intra_op_threads": options.onnx_threads,
            "cuda_requested": options.use_cuda,
        },
    )
    return session


def active_provider(session: onnxruntime.InferenceSession) -> str:
    """The provider that runs the session's first node set (CUDA or CPU)."""
    providers_list: list[str] = session.get_providers()
    return providers_list[0]
