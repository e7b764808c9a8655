"""The process-wide parts every session uses."""

from __future__ import annotations

from dataclasses import dataclass

from duplex.orchestrator.config import OrchestratorConfig
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.router import Router
from duplex.workerclient import WorkerClients


@dataclass(frozen=True)
class SessionServices:
    """Built once by the app's lifespan and handed to every session."""

    config: OrchestratorConfig
    router: Router
    clients: WorkerClients
    metrics: OrchestratorMetrics
