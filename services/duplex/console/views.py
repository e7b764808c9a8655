"""The read-only pages (Workers, GPUs, Sessions) and the HTMX fragments they poll.

Every figure comes from Redis: worker records (their measured `metrics` and `gpus` samples)
through the registry view, sessions from what each orchestrator publishes. A page renders its
fragment once inline, then the fragment is polled every `console.refresh_ms`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from duplex.console.auth import csrf_token, require_reader, signed_in
from duplex.console.history import GpuHistory
from duplex.console.state import ConsoleState, state_of
from duplex.registry._connect import REDIS_ERRORS, describe
from duplex.registry.orchestrators import OrchestratorRecord, read_orchestrators
from duplex.registry.records import GpuSample, WorkerRecord

_LOG = logging.getLogger(__name__)

_READ_TIMEOUT_S = 2.0
_SPARK_W, _SPARK_H = 120, 28
_GIB = 1024**3


class Health(StrEnum):
    """A worker's heartbeat against `redis.worker_ttl_ms`."""

    OK = "ok"
    LATE = "late"  # past half the TTL: a heartbeat was missed; it expires at the TTL


@dataclass(frozen=True)
class WorkerRow:
    """One worker as the Workers page shows it (`record` is there for action templates)."""

    name: str
    addr: str
    adapter: str
    device: str
    gpu: str  # gpu_summary: "CPU only" or the GPUs with their utilization
    gpus: tuple[str, ...]  # gpu_parts: one entry per GPU
    resident_models: tuple[str, ...]
    available_models: tuple[str, ...]
    queue_depth: int
    active_sessions: int
    rtf: float
    underruns: int
    heartbeat_age_s: float
    health: Health
    drained: bool
    languages: tuple[str, ...]
    capabilities: tuple[str, ...]
    record: WorkerRecord
    host: str = ""  # the host of `addr`: the page groups workers by it


@dataclass(frozen=True)
class GpuRow:
    """One GPU of one worker, from the sample in the worker's record."""

    key: str  # "worker/gpu_id": stable across refreshes, the sparkline's series
    worker: str
    gpu_id: str
    name: str
    utilization: float | None
    memory_used_bytes: float | None
    memory_total_bytes: float | None
    temperature_c: float | None
    power_w: float | None
    sample_age_s: float
    sparkline: str  # SVG polyline points, "" before the first sample

    @property
    def memory_text(self) -> str:
        used, total = self.memory_used_bytes, self.memory_total_bytes
        if used is None:
            return "\u2013"  # an en dash: no figure
        if total is None or total <= 0:
            return f"{used / _GIB:.1f} GiB"
        return f"{used / _GIB:.1f} / {total / _GIB:.1f} GiB ({100 * used / total:.0f}%)"

    @property
    def memory_percent(self) -> float:
        used, total = self.memory_used_bytes, self.memory_total_bytes
        if used is None or not total:
            return 0.0
        return max(0.0, min(100.0, 100 * used / total))


@dataclass(frozen=True)
class SessionRow:
    """One live session as an orchestrator published it."""

    orchestrator: str
    session: str  # a short prefix: enough to tell sessions apart on the page
    transport: str
    worker: str
    model_id: str
    state: str
    age_s: float
    first_audio_ms: float | None
    barge_ins: int


@dataclass(frozen=True)
class OrchestratorRow:
    """One live orchestrator: its sessions (published and in all) and in-flight counts."""

    id: str
    url: str
    sessions_total: int
    sessions_shown: int
    heartbeat_age_s: float
    inflight: Mapping[str, int]


# -- data shaping (pure: the unit tests call these) ----------------------------------------


def gpu_parts(record: WorkerRecord) -> tuple[str, ...]:
    """Each GPU's name and utilization ("NVIDIA L4 37%"); () for a worker without a GPU."""
    return tuple(
        f"{g.name} {g.util_pct:.0f}%" if g.util_pct is not None else g.name
        for g in record.gpus or ()
    )


def gpu_summary(record: WorkerRecord) -> str:
    """The GPUs with their utilization, comma-separated; "CPU only" without a GPU."""
    return ", ".join(gpu_parts(record)) or "CPU only"


def health_of(age_s: float, worker_ttl_ms: int) -> Health:
    return Health.OK if age_s * 1000 <= worker_ttl_ms / 2 else Health.LATE


def worker_rows(
    workers: Mapping[str, WorkerRecord],
    drained: frozenset[str],
    worker_ttl_ms: int,
    now: float,
) -> list[WorkerRow]:
    rows = []
    for name in sorted(workers):
        r = workers[name]
        age = max(0.0, now - r.last_heartbeat)
        rows.append(
            WorkerRow(
                name=r.name,
                addr=r.addr,
                adapter=r.adapter_type,
                device=r.device,
                gpu=gpu_summary(r),
                gpus=gpu_parts(r),
                resident_models=r.resident_models,
                available_models=r.available_models,
                queue_depth=r.metrics.queue_depth,
                active_sessions=r.metrics.active_sessions,
                rtf=r.metrics.rtf,
                underruns=r.metrics.underruns,
                heartbeat_age_s=age,
                health=health_of(age, worker_ttl_ms),
                drained=name in drained,
                languages=r.capabilities.languages,
                capabilities=tuple(sorted(r.capabilities.names())),
                record=r,
                host=addr_host(r.addr),
            )
        )
    return rows


def addr_host(addr: str) -> str:
    """The host of an announced address ("grpc://10.0.0.5:7001" -> "10.0.0.5")."""
    return urlsplit(addr if "://" in addr else f"grpc://{addr}").hostname or addr


def sparkline_points(values: Sequence[float], width: int = _SPARK_W, height: int = _SPARK_H) -> str:
    """SVG polyline points for utilization percentages (0 at the bottom, 100 at the top)."""
    if not values:
        return ""
    if len(values) == 1:
        values = (values[0], values[0])
    step = width / (len(values) - 1)
    points = []
    for i, value in enumerate(values):
        clamped = max(0.0, min(100.0, value))
        y = height - 1 - (height - 2) * clamped / 100
        points.append(f"{i * step:.1f},{y:.1f}")
    return " ".join(points)


def gpu_key(worker: str, gpu: GpuSample) -> str:
    return f"{worker}/{gpu.gpu_id}"


def record_gpu_history(workers: Mapping[str, WorkerRecord], history: GpuHistory) -> None:
    """Add the latest utilization of every GPU of every worker to the sparklines."""
    for name, record in workers.items():
        for gpu in record.gpus or ():
            if gpu.util_pct is not None:
                history.record(gpu_key(name, gpu), gpu.util_pct)


def gpu_rows(workers: Mapping[str, WorkerRecord], history: GpuHistory, now: float) -> list[GpuRow]:
    rows = []
    for name in sorted(workers):
        for gpu in workers[name].gpus or ():
            key = gpu_key(name, gpu)
            rows.append(
                GpuRow(
                    key=key,
                    worker=name,
                    gpu_id=gpu.gpu_id,
                    name=gpu.name,
                    utilization=gpu.util_pct,
                    memory_used_bytes=gpu.mem_used,
                    memory_total_bytes=gpu.mem_total,
                    temperature_c=gpu.temp_c,
                    power_w=gpu.power_w,
                    sample_age_s=max(0.0, now - gpu.sampled_at),
                    sparkline=sparkline_points(history.series(key)),
                )
            )
    return rows


def session_rows(
    records: Iterable[OrchestratorRecord], now: float
) -> tuple[list[OrchestratorRow], list[SessionRow]]:
    orchestrators, sessions = [], []
    for record in sorted(records, key=lambda r: r.id):
        orchestrators.append(
            OrchestratorRow(
                id=record.id,
                url=record.url,
                sessions_total=record.sessions_total,
                sessions_shown=len(record.sessions),
                heartbeat_age_s=max(0.0, now - record.last_heartbeat),
                inflight=record.inflight,
            )
        )
        for s in sorted(record.sessions, key=lambda s: s.started_at):
            sessions.append(
                SessionRow(
                    orchestrator=record.id,
                    session=s.session_id[:8],
                    transport=s.transport,
                    worker=s.worker,
                    model_id=s.model_id,
                    state=s.state,
                    age_s=max(0.0, now - s.started_at),
                    first_audio_ms=s.first_audio_ms,
                    barge_ins=s.barge_ins,
                )
            )
    return orchestrators, sessions


# -- handlers -------------------------------------------------------------------------------


def _render(request: Request, template: str, context: dict[str, Any]) -> Response:
    state = state_of(request)
    # Only a signed-in session gets a token (a reader on loopback gets no cookie at all).
    context.setdefault("csrf", csrf_token(request) if signed_in(request) else "")
    context.setdefault("redis_ok", state.view.redis_ok())
    context.setdefault("updated", time.strftime("%H:%M:%S"))
    return state.templates.TemplateResponse(request, template, context)


def _workers_context(state: ConsoleState) -> dict[str, Any]:
    rows = worker_rows(
        state.view.workers(), state.view.drained(), state.config.redis.worker_ttl_ms, time.time()
    )
    return {"workers": rows, "worker_ttl_ms": state.config.redis.worker_ttl_ms}


async def home(request: Request) -> Response:
    return RedirectResponse("/workers", 307)


async def workers_page(request: Request) -> Response:
    await require_reader(request)
    return _render(request, "workers.html", _workers_context(state_of(request)))


async def workers_fragment(request: Request) -> Response:
    await require_reader(request)
    return _render(request, "workers_table.html", _workers_context(state_of(request)))


def _worker_context(request: Request) -> dict[str, Any]:
    state = state_of(request)
    name = request.path_params["name"]
    rows = [r for r in _workers_context(state)["workers"] if r.name == name]
    if not rows:
        raise HTTPException(404, f"no live worker named {name!r}")
    return {"worker": rows[0], "worker_ttl_ms": state.config.redis.worker_ttl_ms}


async def worker_page(request: Request) -> Response:
    await require_reader(request)
    return _render(request, "worker.html", _worker_context(request))


async def worker_fragment(request: Request) -> Response:
    await require_reader(request)
    return _render(request, "worker_detail.html", _worker_context(request))


def _gpus_context(state: ConsoleState) -> dict[str, Any]:
    workers = state.view.workers()  # the history is sampled by the app's GPU history task
    rows = gpu_rows(workers, state.gpu_history, time.time())
    return {"gpus": rows, "worker_count": len(workers)}


async def gpus_page(request: Request) -> Response:
    await require_reader(request)
    return _render(request, "gpus.html", _gpus_context(state_of(request)))


async def gpus_fragment(request: Request) -> Response:
    await require_reader(request)
    return _render(request, "gpus_table.html", _gpus_context(state_of(request)))


async def _sessions_context(state: ConsoleState) -> dict[str, Any]:
    error = ""
    records: list[OrchestratorRecord] = []
    try:
        async with asyncio.timeout(_READ_TIMEOUT_S):
            records = await read_orchestrators(state.redis)
    except REDIS_ERRORS as exc:  # TimeoutError among them
        error = f"cannot read the orchestrators from Redis ({describe(exc)})"
        # Debug only: every open page polls this; the registry view logs the outage once.
        _LOG.debug("sessions page: %s", error)
    orchestrators, sessions = session_rows(records, time.time())
    return {"orchestrators": orchestrators, "sessions": sessions, "error": error}


async def sessions_page(request: Request) -> Response:
    await require_reader(request)
    return _render(request, "sessions.html", await _sessions_context(state_of(request)))


async def sessions_fragment(request: Request) -> Response:
    await require_reader(request)
    return _render(request, "sessions_table.html", await _sessions_context(state_of(request)))


def view_routes() -> list[BaseRoute]:
    """The read-only pages and their fragments (polled by HTMX)."""
    return [
        Route("/", home, methods=["GET"]),
        Route("/workers", workers_page, methods=["GET"]),
        Route("/workers/{name}", worker_page, methods=["GET"]),
        Route("/gpus", gpus_page, methods=["GET"]),
        Route("/sessions", sessions_page, methods=["GET"]),
        Route("/fragments/workers", workers_fragment, methods=["GET"]),
        Route("/fragments/workers/{name}", worker_fragment, methods=["GET"]),
        Route("/fragments/gpus", gpus_fragment, methods=["GET"]),
        Route("/fragments/sessions", sessions_fragment, methods=["GET"]),
    ]
