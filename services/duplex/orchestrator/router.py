"""Routing decisions over the live registry view, with the orchestrator's own in-flight counts.

`duplex.routing.choose_worker` is pure; this module feeds it: the view's current snapshot
(workers, drained set, and the routing settings read from Redis at every decision, so a
change made by the console governs the next session), a cursor advanced once per decision,
and the sessions routed to each worker that its heartbeat cannot show yet.

In-flight counts: a heartbeat published after a session was opened on the worker counts
that session in the worker's metrics. An entry therefore lives until the worker's record
shows a ``last_heartbeat`` later than the routing time plus ``heartbeat_margin_s`` (room
for the stream to open), until the session releases it, or until the worker leaves the
view. Without it a burst of six sessions over two idle workers would all see the same
heartbeat and go 6/0 instead of 3/3.

Several orchestrators: with a :class:`SharedInflight`, each decision is also written to Redis
(`inflight:{worker}`) and the other orchestrators' decisions that the worker's heartbeat does
not show yet count as well, so a burst spread over several orchestrators still splits evenly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.registry.inflight import SharedInflight
from duplex.registry.records import RoutingSettings, WorkerRecord
from duplex.registry.view import RegistryView
from duplex.routing import Decision, NoWorkerAvailable, SessionRequest, choose_worker

__all__ = ["Decision", "NoWorkerAvailable", "Router", "SessionRequest"]


@dataclass(eq=False)
class _InFlight:
    decision: Decision
    routed_at: float  # unix seconds, comparable with last_heartbeat


@dataclass(eq=False)
class _Shared:
    decision: Decision
    member: str  # its entry in `inflight:{worker}`


@dataclass(frozen=True)
class Readiness:
    """What `/ready` reports; `reason` is None when the orchestrator is ready."""

    redis_ok: bool
    usable: int
    drained: int
    reason: str | None

    @property
    def ready(self) -> bool:
        return self.reason is None


class Router:
    """Chooses a worker for each new session (and for failovers)."""

    def __init__(
        self,
        view: RegistryView,
        fallback: RoutingSettings,
        *,
        metrics: OrchestratorMetrics | None = None,
        heartbeat_margin_s: float = 0.25,
        clock: Callable[[], float] = time.time,
        shared: SharedInflight | None = None,
    ) -> None:
        self._view = view
        # The view already falls back to this; kept for a view that has never synced.
        self._fallback = fallback
        self._metrics = metrics
        self._margin = heartbeat_margin_s
        self._clock = clock
        self._cursor = 0
        self._inflight: dict[str, list[_InFlight]] = {}
        # The address of each worker this router chose, kept after it leaves the view: a
        # failover often comes after the failed worker's record expired, while its siblings on
        # the same (cut off) host are still in the view.
        self._routed_addr: dict[str, str] = {}
        self._shared = shared
        self._shared_entries: dict[int, _Shared] = {}  # id(decision) -> its Redis entry

    @property
    def shared(self) -> SharedInflight | None:
        """The in-flight counts shared with other orchestrators (None: this one alone)."""
        return self._shared

    def settings(self) -> RoutingSettings:
        """The settings the next decision uses (Redis override, else the config)."""
        return self._view.routing() or self._fallback

    def workers(self) -> Mapping[str, WorkerRecord]:
        return self._view.workers()

    def readiness(self) -> Readiness:
        """Whether new sessions can be routed: Redis reachable and a live undrained worker."""
        workers = self._view.workers()
        drained = self._view.drained() & set(workers)
        usable = len(workers) - len(drained)
        redis_ok = self._view.redis_ok()
        reason = None
        if not redis_ok:
            reason = "Redis is unreachable"
        elif not usable:
            reason = "no live worker takes new sessions"
        return Readiness(redis_ok, usable, len(drained), reason)

    def inflight(self) -> Mapping[str, int]:
        """Sessions routed to each worker that its last heartbeat does not show yet."""
        self._prune(self._view.workers())
        return {name: len(entries) for name, entries in self._inflight.items() if entries}

    def route(self, request: SessionRequest, *, exclude: frozenset[str] = frozenset()) -> Decision:
        """Choose a worker; raises NoWorkerAvailable saying what was asked and why not.

        ``exclude`` names workers that must not be chosen (those that just failed this
        session). A failover prefers workers on another host than the failed ones: a worker
        that stops answering often means its whole host is cut off, and its siblings there
        are still in the view until their heartbeats expire. The decision counts as in
        flight until `release` or the next heartbeat.
        """
        started = time.perf_counter()
        live = self._view.workers()
        self._prune(live)
        settings = self.settings()
        candidates = [w for name, w in live.items() if name not in exclude]
        counts = {name: len(entries) for name, entries in self._inflight.items()}
        cursor = self._cursor
        if self._shared is not None:
            cursor += self._shared.offset(len(candidates))
            self._shared.watch(live)
            for name in self._shared.mirrored():
                worker = live.get(name)
                if worker is None:
                    continue
                others = self._shared.others(name, worker.last_heartbeat - self._margin)
                if others:
                    counts[name] = counts.get(name, 0) + others
        self._cursor += 1
        failed_addrs = [live[n].addr if n in live else self._routed_addr.get(n) for n in exclude]
        failed_hosts = {_host(addr) for addr in failed_addrs if addr is not None}
        # Parsing every address costs ~10 us a worker: only a failover needs it.
        elsewhere = (
            [w for w in candidates if _host(w.addr) not in failed_hosts] if failed_hosts else []
        )
        decision = None
        for pool in [elsewhere, candidates] if failed_hosts and elsewhere else [candidates]:
            try:
                decision = choose_worker(
                    request,
                    pool,
                    settings=settings,
                    drained=self._view.drained(),
                    inflight=counts,
                    cursor=cursor,
                )
                break
            except NoWorkerAvailable:
                if pool is candidates:
                    raise
        assert decision is not None
        name = decision.worker.name
        self._routed_addr[name] = decision.worker.addr
        routed_at = self._clock()
        self._inflight.setdefault(name, []).append(_InFlight(decision, routed_at))
        if self._shared is not None:
            member = self._shared.add(name, routed_at)
            self._shared_entries[id(decision)] = _Shared(decision, member)
        if self._metrics is not None:
            self._metrics.routing_decision_seconds.observe(time.perf_counter() - started)
            self._metrics.routing_decisions_total.labels(
                strategy=settings.strategy.value, worker=name
            ).inc()
        return decision

    def release(self, decision: Decision) -> None:
        """The session routed by ``decision`` ended (or never opened): stop counting it."""
        shared = self._shared_entries.get(id(decision))
        if shared is not None and shared.decision is decision and self._shared is not None:
            del self._shared_entries[id(decision)]
            self._shared.remove(decision.worker.name, shared.member)
        entries = self._inflight.get(decision.worker.name)
        if not entries:
            return
        for i, entry in enumerate(entries):
            if entry.decision is decision:
                del entries[i]
                break
        if not entries:
            del self._inflight[decision.worker.name]

    def _prune(self, live: Mapping[str, WorkerRecord]) -> None:
        for name in list(self._inflight):
            worker = live.get(name)
            if worker is None:
                del self._inflight[name]
                continue
            seen_until = worker.last_heartbeat - self._margin
            kept = [e for e in self._inflight[name] if e.routed_at > seen_until]
            if kept:
                self._inflight[name] = kept
            else:
                del self._inflight[name]


def _host(addr: str) -> str:
    """The host of an announced address ("grpc://10.0.0.5:7001" -> "10.0.0.5")."""
    return urlsplit(addr if "://" in addr else f"grpc://{addr}").hostname or addr
