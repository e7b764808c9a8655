"""Prometheus metrics of one console process, served at `/metrics`.

Each `ConsoleMetrics` owns its own `CollectorRegistry` (never the global default), so several
apps can live in one process (tests) without clashing. Labels are bounded: an action's name
and its outcome, never a worker's free text, a token or a session id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class ConsoleMetrics:
    """The console's counters; `render()` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # prometheus_client adds the `_total` suffix to counters: these export as
        # duplex_console_actions_total and duplex_console_signin_failures_total.
        self.actions_total = Counter(
            "duplex_console_actions",
            "Operator actions, by action (signin, signout, set_routing, drain, undrain, load, "
            "unload, speak, ...) and outcome (ok, or why it was refused or failed).",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.signin_failures_total = Counter(
            "duplex_console_signin_failures",
            "Sign-ins refused for a wrong admin token (rate-limited tries not counted).",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
