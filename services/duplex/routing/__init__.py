"""Routing: pure functions from a session request and the live workers to a Decision."""

from duplex.routing.choose import choose_worker
from duplex.routing.filters import eligible_workers, passes_filters
from duplex.routing.request import Decision, NoWorkerAvailable, NoWorkerCause, SessionRequest
from duplex.routing.strategies import load

__all__ = [
    "Decision",
    "NoWorkerAvailable",
    "NoWorkerCause",
    "SessionRequest",
    "choose_worker",
    "eligible_workers",
    "load",
    "passes_filters",
]
