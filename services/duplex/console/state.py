"""Everything the console's routes use, built by the app's lifespan (nothing at module level)."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as redis
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from duplex.console.config import ConsoleConfig
from duplex.console.history import GpuHistory
from duplex.console.metrics import ConsoleMetrics
from duplex.console.ratelimit import FailureLimiter
from duplex.registry.admin import RegistryAdmin
from duplex.registry.view import RegistryView
from duplex.workerclient import WorkerClients


@dataclass(frozen=True)
class ConsoleState:
    """The console's runtime, reached by every handler through :func:`state_of`."""

    config: ConsoleConfig
    # workers(), drained(), routing(), redis_ok(): a live mirror of the registry.
    view: RegistryView
    # decode_responses=True; for read_orchestrators().
    redis: redis.Redis
    # set_routing, clear_routing, drain, undrain.
    admin: RegistryAdmin
    # get(target) -> WorkerClient (load, unload, "speak on this worker").
    clients: WorkerClients
    # web/console/templates; globals csrf_token(request), signed_in(request).
    templates: Jinja2Templates
    # actions_total{action,outcome}, signin_failures_total.
    metrics: ConsoleMetrics
    # Wrong admin tokens per client address (sign-in rate limit).
    signin_limiter: FailureLimiter = field(default_factory=FailureLimiter)
    # Recent utilization per GPU, for the sparklines.
    gpu_history: GpuHistory = field(default_factory=GpuHistory)


def state_of(request: Request) -> ConsoleState:
    """The running console's state (503 while the app is starting or stopping)."""
    state: ConsoleState | None = getattr(request.app.state, "console", None)
    if state is None:
        raise HTTPException(503, "the console is starting or stopping")
    return state
