"""Typed records stored in Redis, and their exact encoding.

Every field name and JSON shape that lives in Redis is defined here and only here.
The `worker:{name}` hash carries the deployment guide's fields (`name`, `addr`,
`adapter_type`, `capabilities`, `resident_models`, `metrics`, `last_heartbeat`)
plus `available_models` (the worker's whole catalog) and `device`.
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
