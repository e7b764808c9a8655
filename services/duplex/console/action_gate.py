"""What every state-changing console request goes through: the admin check, counted.

Each action is counted once in ``actions_total{action,outcome}`` with a bounded outcome, so
refused and failed attempts are as visible on a dashboard as the ones that went through.
"""

from __future__ import annotations

from enum import StrEnum

from starlette.exceptions import HTTPException
from starlette.requests import Request

from duplex.console.auth import require_admin_action
from duplex.console.state import ConsoleState


class Action(StrEnum):
    """The steering actions (the `action` label)."""

    SET_ROUTING = "set_routing"
    RESET_ROUTING = "reset_routing"
    DRAIN = "drain"
    UNDRAIN = "undrain"
    LOAD = "load"
    UNLOAD = "unload"
    SPEAK = "speak"


class Outcome(StrEnum):
    """How an action ended (the `outcome` label)."""

    OK = "ok"
    UNAUTHORIZED = "unauthorized"  # not signed in (401)
    FORBIDDEN = "forbidden"  # CSRF token or origin refused (403)
    BAD_REQUEST = "bad_request"  # a form value was refused (400)
    NOT_FOUND = "not_found"  # no such worker or model (404)
    WORKER_ERROR = "worker_error"  # the worker's gRPC call failed (502)
    REDIS_ERROR = "redis_error"  # Redis could not be written (503)


class ActionFailed(Exception):
    """An action refused or failed at the edge: the HTTP status and what to tell the user."""

    def __init__(self, status: int, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message


def count(state: ConsoleState, action: Action, outcome: Outcome) -> None:
    state.metrics.actions_total.labels(action=action.value, outcome=outcome.value).inc()


async def admit(request: Request, state: ConsoleState, action: Action) -> None:
    """`require_admin_action`, with a refusal counted before it propagates."""
    try:
        await require_admin_action(request)
    except HTTPException as exc:
        refused = Outcome.UNAUTHORIZED if exc.status_code == 401 else Outcome.FORBIDDEN
        count(state, action, refused)
        raise


def is_htmx(request: Request) -> bool:
    """An HTMX request gets a fragment to swap in; a plain form post gets a whole page."""
    return request.headers.get("HX-Request") == "true"
