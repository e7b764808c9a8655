"""Everything that touches Redis: key names, record encodings, the worker's heartbeat,
the orchestrator's live view, and operator writes."""

from duplex.registry.admin import RegistryAdmin
from duplex.registry.announcer import Announcer
from duplex.registry.records import (
    Capabilities,
    PriorityRule,
    RegistryDecodeError,
    RoutingSettings,
    Strategy,
    WorkerMetrics,
    WorkerRecord,
)
from duplex.registry.view import RegistryView

__all__ = [
    "Announcer",
    "Capabilities",
    "PriorityRule",
    "RegistryAdmin",
    "RegistryDecodeError",
    "RegistryView",
    "RoutingSettings",
    "Strategy",
    "WorkerMetrics",
    "WorkerRecord",
]
