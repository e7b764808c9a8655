"""Typed records stored in Redis, and their exact encoding.

Every field name and JSON shape that lives in Redis is defined here and only here.
The `worker:{name}` hash carries the deployment guide's fields (`name`, `addr`,
`adapter_type`, `capabilities`, `resident_models`, `metrics`, `last_heartbeat`)
plus `available_models` (the worker's whole catalog), `device`, `gpu` (the GPU sampler's
latest reading: a compact JSON list, or the string `none` where the worker sees no GPU)
and `metrics_port` (the port of its Prometheus `/metrics`, or `none`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RegistryDecodeError(ValueError):
    """A value in Redis does not have the shape this module writes."""


@dataclass(frozen=True)
class Capabilities:
    streaming: bool = True
    zero_shot: bool = False
    languages: tuple[str, ...] = ()
    # Any further capability names a worker advertises ("ssml", "emotive", ...).
    extra: tuple[str, ...] = ()

    def names(self) -> frozenset[str]:
        """Every capability as a name, for `required_capabilities` filters."""
        pairs = (("streaming", self.streaming), ("zero_shot", self.zero_shot))
        flags = {n for n, on in pairs if on}
        return frozenset(flags | set(self.extra))

    def to_json(self) -> str:
        return json.dumps(
            {
                "streaming": self.streaming,
                "zero_shot": self.zero_shot,
                "languages": list(self.languages),
                "extra": list(self.extra),
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> Capabilities:
        data = _json_object(raw, "capabilities")
        return cls(
            streaming=bool(data.get("streaming", False)),
            zero_shot=bool(data.get("zero_shot", False)),
            languages=tuple(str(x) for x in data.get("languages", [])),
            extra=tuple(str(x) for x in data.get("extra", [])),
        )


@dataclass(frozen=True)
class WorkerMetrics:
    """Measured by the worker; published on every heartbeat."""

    queue_depth: int = 0
    active_sessions: int = 0
    rtf: float = 0.0
    underruns: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "queue_depth": self.queue_depth,
                "active_sessions": self.active_sessions,
                "rtf": round(self.rtf, 4),
                "underruns": self.underruns,
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> WorkerMetrics:
        data = _json_object(raw, "metrics")
        try:
            return cls(
                queue_depth=int(data.get("queue_depth", 0)),
                active_sessions=int(data.get("active_sessions", 0)),
                rtf=float(data.get("rtf", 0.0)),
                underruns=int(data.get("underruns", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise RegistryDecodeError(f"metrics: {exc}") from exc


NO_GPU = "none"
"""The `gpu` field of a worker that sees no GPU (no driver, no device, none visible)."""

NO_METRICS_PORT = "none"
"""The `metrics_port` field of a worker that serves no /metrics."""


@dataclass(frozen=True)
class GpuSample:
    """One GPU as the worker's sampler last read it through NVML.

    `gpu_id` is the GPU's NVML index (as nvidia-smi numbers it). A value NVML could not give
    (e.g. power on a board that does not report it) is None, never a made-up zero.
    """

    gpu_id: str
    name: str
    util_pct: float | None
    mem_used: int | None  # bytes
    mem_total: int | None  # bytes
    temp_c: float | None
    power_w: float | None
    sampled_at: float  # unix seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu_id": self.gpu_id,
            "name": self.name,
            "util_pct": self.util_pct,
            "mem_used": self.mem_used,
            "mem_total": self.mem_total,
            "temp_c": self.temp_c,
            "power_w": self.power_w,
            "sampled_at": self.sampled_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> GpuSample:
        if not isinstance(data, dict):
            raise RegistryDecodeError("gpu: each entry must be a JSON object")
        try:
            return cls(
                gpu_id=str(data["gpu_id"]),
                name=str(data.get("name", "")),
                util_pct=_opt_float(data.get("util_pct")),
                mem_used=_opt_int(data.get("mem_used")),
                mem_total=_opt_int(data.get("mem_total")),
                temp_c=_opt_float(data.get("temp_c")),
                power_w=_opt_float(data.get("power_w")),
                sampled_at=float(data["sampled_at"]),
            )
        except KeyError as exc:
            raise RegistryDecodeError(f"gpu: an entry lacks {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise RegistryDecodeError(f"gpu: {exc}") from exc


def encode_gpus(gpus: tuple[GpuSample, ...] | None) -> str:
    """The `gpu` field: compact JSON, or `none` for no GPU."""
    if gpus is None:
        return NO_GPU
    return json.dumps([g.to_dict() for g in gpus], separators=(",", ":"))


def decode_gpus(raw: str | None) -> tuple[GpuSample, ...] | None:
    """The `gpu` field read back. None for `none`, and also for a record written before the
    field existed (absent): such a worker's GPUs are unknown, which readers show as none."""
    if raw is None or raw == NO_GPU:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RegistryDecodeError("gpu: not JSON") from exc
    if not isinstance(data, list):
        raise RegistryDecodeError("gpu: expected a JSON list or 'none'")
    return tuple(GpuSample.from_dict(item) for item in data)


@dataclass(frozen=True)
class WorkerRecord:
    """One worker as announced in `worker:{name}`."""

    name: str
    addr: str  # "grpc://host:port"
    adapter_type: str
    capabilities: Capabilities
    resident_models: tuple[str, ...]
    available_models: tuple[str, ...]
    metrics: WorkerMetrics
    last_heartbeat: float  # unix seconds
    device: str = "cpu"
    gpus: tuple[GpuSample, ...] | None = None  # None: no GPU (or a record without `gpu`)
    metrics_port: int | None = None  # None: no /metrics (or a record without the field)

    @property
    def target(self) -> str:
        """The address in the form grpc.aio channels take ("host:port")."""
        return self.addr.removeprefix("grpc://")

    def encode(self) -> dict[str, str]:
        return {
            "name": self.name,
            "addr": self.addr,
            "adapter_type": self.adapter_type,
            "capabilities": self.capabilities.to_json(),
            "resident_models": json.dumps(list(self.resident_models)),
            "available_models": json.dumps(list(self.available_models)),
            "metrics": self.metrics.to_json(),
            "last_heartbeat": repr(self.last_heartbeat),
            "device": self.device,
            "gpu": encode_gpus(self.gpus),
            # Always written: HSET never deletes a field, so a restart without metrics must
            # overwrite the old port.
            "metrics_port": NO_METRICS_PORT
            if self.metrics_port is None
            else str(self.metrics_port),
        }

    @classmethod
    def decode(cls, fields: Mapping[str, str]) -> WorkerRecord:
        try:
            return cls(
                name=fields["name"],
                addr=fields["addr"],
                adapter_type=fields["adapter_type"],
                capabilities=Capabilities.from_json(fields["capabilities"]),
                resident_models=_json_str_list(fields["resident_models"], "resident_models"),
                available_models=_json_str_list(
                    fields.get("available_models", "[]"), "available_models"
                ),
                metrics=WorkerMetrics.from_json(fields["metrics"]),
                last_heartbeat=float(fields["last_heartbeat"]),
                device=fields.get("device", "cpu"),
                gpus=decode_gpus(fields.get("gpu")),
                metrics_port=_metrics_port(fields.get("metrics_port")),
            )
        except KeyError as exc:
            raise RegistryDecodeError(f"worker hash lacks field {exc.args[0]!r}") from exc
        except ValueError as exc:
            raise RegistryDecodeError(str(exc)) from exc


class Strategy(StrEnum):
    """The deployment guide's load-balancing strategies."""

    LEAST_LOADED = "least_loaded"
    PREFER_RESIDENT = "prefer_resident"
    ROUND_ROBIN = "round_robin"
    CAPABILITY_AWARE = "capability_aware"
    PRIORITY = "priority"


@dataclass(frozen=True)
class PriorityRule:
    adapter_type: str
    priority: int  # 1 is tried first


@dataclass(frozen=True)
class RoutingSettings:
    """The routing strategy and its parameters (`routing:` in orchestrator.yaml,
    overridable live through the `routing:strategy` hash)."""

    strategy: Strategy = Strategy.LEAST_LOADED
    prefer_resident_models: bool = True
    resident_weight: float = 0.8
    required_capabilities: tuple[str, ...] = ()
    worker_priority: tuple[PriorityRule, ...] = field(default_factory=tuple)
    overflow_threshold: int = 5

    def encode(self) -> dict[str, str]:
        return {
            "load_balancing_strategy": self.strategy.value,
            "prefer_resident_models": json.dumps(self.prefer_resident_models),
            "resident_weight": repr(self.resident_weight),
            "required_capabilities": json.dumps(list(self.required_capabilities)),
            "worker_priority": json.dumps(
                [
                    {"adapter_type": r.adapter_type, "priority": r.priority}
                    for r in self.worker_priority
                ]
            ),
            "overflow_threshold": str(self.overflow_threshold),
        }

    @classmethod
    def decode(cls, fields: Mapping[str, str], fallback: RoutingSettings) -> RoutingSettings:
        """Fields missing from Redis keep the fallback's (the config file's) values."""
        try:
            strategy = Strategy(fields.get("load_balancing_strategy", fallback.strategy.value))
            rules_raw = (
                json.loads(fields["worker_priority"]) if "worker_priority" in fields else None
            )
            rules = (
                fallback.worker_priority
                if rules_raw is None
                else tuple(
                    PriorityRule(str(r["adapter_type"]), int(r["priority"])) for r in rules_raw
                )
            )
            required = (
                _json_str_list(fields["required_capabilities"], "required_capabilities")
                if "required_capabilities" in fields
                else fallback.required_capabilities
            )
            return cls(
                strategy=strategy,
                prefer_resident_models=bool(json.loads(fields["prefer_resident_models"]))
                if "prefer_resident_models" in fields
                else fallback.prefer_resident_models,
                resident_weight=float(fields.get("resident_weight", fallback.resident_weight)),
                required_capabilities=required,
                worker_priority=rules,
                overflow_threshold=int(
                    fields.get("overflow_threshold", fallback.overflow_threshold)
                ),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryDecodeError(f"routing settings: {exc}") from exc


def _metrics_port(raw: str | None) -> int | None:
    if raw is None or raw == NO_METRICS_PORT:
        return None
    try:
        return int(raw)
    except ValueError:
        raise RegistryDecodeError(f"metrics_port: not a port number: {raw!r}") from None


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number or null, got {value!r}")
    return float(value)


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer or null, got {value!r}")
    return value


def _json_object(raw: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RegistryDecodeError(f"{what}: not JSON") from exc
    if not isinstance(data, dict):
        raise RegistryDecodeError(f"{what}: expected a JSON object")
    return data


def _json_str_list(raw: str, what: str) -> tuple[str, ...]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RegistryDecodeError(f"{what}: not JSON") from exc
    if not isinstance(data, list):
        raise RegistryDecodeError(f"{what}: expected a JSON list")
    return tuple(str(x) for x in data)
