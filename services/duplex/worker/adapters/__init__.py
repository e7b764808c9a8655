"""Synthesis engines behind one contract (see :mod:`duplex.worker.adapters.base`)."""

from duplex.worker.adapters.base import (
    Adapter,
    AdapterOptions,
    AdapterUnavailable,
    Int16Array,
    Voice,
    adapter_families,
    adapter_for,
)

__all__ = [
    "Adapter",
    "AdapterOptions",
    "AdapterUnavailable",
    "Int16Array",
    "Voice",
    "adapter_families",
    "adapter_for",
]
