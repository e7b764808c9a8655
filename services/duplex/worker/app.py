"""Wiring of one worker process: models, scheduler, gRPC server, health, announcer, and the
telemetry (Prometheus `/metrics` and the GPU sampler).

:class:`WorkerApp` is what `python -m duplex.worker` runs; tests run it in-process on port 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from duplex.registry.announcer import Announcer
from duplex.registry.records import Capabilities, WorkerMetrics, WorkerRecord
from duplex.worker.adapters.base import adapter_families
from duplex.worker.advertise import AdvertiseError, resolve_advertise_host
from duplex.worker.catalog import Catalog, builtin_catalog
from duplex.worker.config import WorkerConfig
from duplex.worker.devices import DeviceInfo, describe, detect_devices
from duplex.worker.gpu_sampler import GpuSampler
from duplex.worker.health import WorkerHealth
from duplex.worker.metrics import MetricsServer, WorkerPromMetrics
from duplex.worker.model_manager import ModelLoadFailed, ModelManager
from duplex.worker.scheduler import SynthesisScheduler
from duplex.worker.servicer import TTSWorkerServicer, WorkerIdentity, add_to_server
from duplex.workerclient.credentials import WorkerSecurity, WorkerSecurityError

_LOG = logging.getLogger(__name__)

# Dead clients are found by keepalive pings; a Synthesize stream may idle between texts.
_SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


class WorkerStartupError(RuntimeError):
    """The worker cannot start (no model for its adapter, default model fails, port taken)."""


class WorkerApp:
    """One TTS worker: `await start()`, then `await drain_and_stop()`."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        catalog: Catalog | None = None,
        environ: Mapping[str, str] | None = None,
        nvml: Any | None = None,
    ) -> None:
        self.config = config
        self._environ = os.environ if environ is None else environ
        self._nvml = nvml  # an object with the pynvml API (tests); None: nvidia-ml-py
        self._full_catalog = catalog
        self._port: int | None = None
        # `auto` (the address on the route to Redis) is resolved once, at start.
        self._advertise_host = config.worker.advertise_host
        self._device = "cpu"
        self._catalog: Catalog | None = None
        self._scheduler: SynthesisScheduler | None = None
        self._models: ModelManager | None = None
        self._servicer: TTSWorkerServicer | None = None
        self._health = WorkerHealth()
        self._server: grpc.aio.Server | None = None
        self._announcer: Announcer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_task: asyncio.Task[None] | None = None
        self._metrics = WorkerPromMetrics(config.worker.name)
        self._metrics_server: MetricsServer | None = None
        self._metrics_port: int | None = None
        self._gpu = GpuSampler(
            config.worker.name,
            self._metrics.registry,
            interval_s=config.gpu.sample_interval_ms / 1000,
            nvml=nvml,
            environ=self._environ,
        )

    # -- what tests and the entry point read --------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("worker not started")
        return self._port

    @property
    def addr(self) -> str:
        """The announced address, "grpc://advertise_host:port"."""
        return f"grpc://{self._advertise_host}:{self.port}"

    @property
    def models(self) -> ModelManager:
        if self._models is None:
            raise RuntimeError("worker not started")
        return self._models

    @property
    def servicer(self) -> TTSWorkerServicer:
        if self._servicer is None:
            raise RuntimeError("worker not started")
        return self._servicer

    @property
    def health(self) -> WorkerHealth:
        return self._health

    @property
    def metrics(self) -> WorkerPromMetrics:
        return self._metrics

    @property
    def gpu_sampler(self) -> GpuSampler:
        return self._gpu

    @property
    def metrics_port(self) -> int | None:
        """The bound /metrics port (None: metrics off, or not started)."""
        return self._metrics_port

    @property
    def metrics_url(self) -> str | None:
        if self._metrics_port is None:
            return None
        host = self.config.worker.metrics_host
        if host in ("0.0.0.0", "::"):
            host = self._advertise_host  # a wildcard is no address to open
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._metrics_port}/metrics"

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> int:
        """Load the default model, serve gRPC, announce; returns the bound port."""
        worker = self.config.worker
        try:
            self._advertise_host = resolve_advertise_host(
                worker.advertise_host, self.config.redis.url, bind_host=worker.host
            )
        except AdvertiseError as exc:
            raise WorkerStartupError(str(exc)) from exc
        self._device = self._log_devices(detect_devices(environ=self._environ))
        full = self._full_catalog
        if full is None:
            manager = self.config.model_manager
            full = builtin_catalog(
                voices=manager.voices, model_dirs=manager.model_dirs, environ=self._environ
            )
        self._catalog = Catalog(full.for_family(worker.adapter_type))
        if not len(self._catalog):
            raise WorkerStartupError(
                f"no model in the catalog for adapter_type {worker.adapter_type!r}; "
                f"adapter types: {', '.join(adapter_families())}"
            )
        await self._start_telemetry()
        try:
            self._scheduler = SynthesisScheduler(worker.inference_threads, metrics=self._metrics)
            self._scheduler.start()
            self._models = ModelManager(
                self._catalog,
                self.config.model_manager,
                worker.adapter_options(),
                metrics=self._metrics,
            )
            try:
                await self._models.start()
            except ModelLoadFailed as exc:
                raise WorkerStartupError(f"default model failed to load: {exc}") from exc
            await self._serve()
        except BaseException:
            await self._release_engine()
            await self._stop_telemetry()
            raise
        self._announcer = Announcer(
            self.config.redis.url,
            self.snapshot,
            interval_s=self.config.redis.heartbeat_interval_ms / 1000,
            ttl_s=self.config.redis.worker_ttl_ms / 1000,
        )
        self._tasks = [
            asyncio.create_task(self._announcer.run(), name="worker-announcer"),
            asyncio.create_task(self._models.run_evictions(), name="worker-evictions"),
        ]
        _LOG.info(
            "worker ready",
            extra={
                "worker": worker.name,
                "addr": self.addr,
                "port": self.port,
                "adapter_type": worker.adapter_type,
                "resident": ",".join(self._models.resident()),
                "metrics_url": self.metrics_url,
            },
        )
        return self.port

    async def _start_telemetry(self) -> None:
        """Serve /metrics (a port that cannot be bound stops the start) and start the GPU
        sampler, whose first reading is then in the first heartbeat."""
        worker = self.config.worker
        if worker.metrics_enabled:
            server = MetricsServer(self._metrics.registry, worker.metrics_host, worker.metrics_port)
            try:
                self._metrics_port = await asyncio.to_thread(server.start)
            except OSError as exc:
                raise WorkerStartupError(
                    f"cannot serve metrics on {worker.metrics_host}:{worker.metrics_port}: {exc}"
                ) from exc
            self._metrics_server = server
            _LOG.info(
                "serving metrics",
                extra={"worker": worker.name, "metrics_url": self.metrics_url},
            )
        await asyncio.to_thread(self._gpu.start)

    async def _stop_telemetry(self) -> None:
        await asyncio.to_thread(self._gpu.stop)
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.stop)
            self._metrics_server = None

    async def _serve(self) -> None:
        assert self._catalog is not None and self._models is not None
        assert self._scheduler is not None
        worker = self.config.worker
        self._servicer = TTSWorkerServicer(
            config=self.config,
            identity=WorkerIdentity(worker.name, worker.adapter_type, self._device),
            catalog=self._catalog,
            models=self._models,
            scheduler=self._scheduler,
            metrics=self._metrics,
        )
        # Across hosts: a token and/or mutual TLS (DUPLEX_WORKER_TOKEN, DUPLEX_WORKER_TLS_*).
        try:
            security = WorkerSecurity.from_env(self._environ)
        except WorkerSecurityError as exc:
            raise WorkerStartupError(str(exc)) from exc
        server = grpc.aio.server(
            options=_SERVER_OPTIONS, interceptors=security.server_interceptors()
        )
        add_to_server(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health.servicer, server)
        address = f"{worker.host}:{worker.grpc_port}"
        try:
            credentials = security.server_credentials()
            port = (
                server.add_secure_port(address, credentials)
                if credentials is not None
                else server.add_insecure_port(address)
            )
        except WorkerSecurityError as exc:
            raise WorkerStartupError(str(exc)) from exc
        except RuntimeError as exc:
            raise WorkerStartupError(
                f"cannot listen on {worker.host}:{worker.grpc_port}: {exc}"
            ) from exc
        if port == 0:
            raise WorkerStartupError(f"cannot listen on {worker.host}:{worker.grpc_port}")
        await self._health.update(
            default_loaded=self._models.is_loaded(self._models.default_model_id), draining=False
        )
        await server.start()
        self._server = server
        self._port = port

    async def drain_and_stop(self) -> None:
        """NOT_SERVING, deregister, refuse new sessions, let live ones finish within
        `drain_grace_s`, then stop everything. Every caller waits for the one drain."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._drain_and_stop(), name="worker-drain")
        # Shielded: a caller that goes away must not cut the drain short.
        await asyncio.shield(self._stop_task)

    async def _drain_and_stop(self) -> None:
        grace = self.config.worker.drain_grace_s
        await self._health.update(default_loaded=True, draining=True)
        if self._servicer is not None:
            self._servicer.start_drain()
            _LOG.info(
                "draining",
                extra={
                    "worker": self.config.worker.name,
                    "active_sessions": self._servicer.active_sessions(),
                    "grace_s": grace,
                },
            )
        for task in self._tasks:
            await _stop_task(task)
        self._tasks = []
        if self._announcer is not None:
            await self._announcer.deregister()
            await self._announcer.close()
        if self._servicer is not None and not await self._servicer.wait_sessions_done(grace):
            _LOG.warning(
                "drain grace over, cancelling sessions",
                extra={
                    "worker": self.config.worker.name,
                    "active_sessions": self._servicer.active_sessions(),
                },
            )
        await self._health.shutdown()
        if self._server is not None:
            await self._server.stop(grace=0.5)
        await self._release_engine()
        # Last: /metrics answers while the worker drains.
        await self._stop_telemetry()
        _LOG.info("worker stopped", extra={"worker": self.config.worker.name})

    async def _release_engine(self) -> None:
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.close)
        if self._models is not None:
            await self._models.close()

    # -- the announcement -------------------------------------------------------------

    def snapshot(self) -> WorkerRecord:
        """The `worker:{name}` record as of now (called on every heartbeat)."""
        assert self._catalog is not None and self._scheduler is not None
        specs = self._catalog.all()
        return WorkerRecord(
            name=self.config.worker.name,
            addr=self.addr,
            adapter_type=self.config.worker.adapter_type,
            capabilities=Capabilities(
                streaming=any("streaming" in s.capabilities for s in specs),
                zero_shot=any("zero_shot" in s.capabilities for s in specs),
                languages=self._catalog.languages(),
                # "speed" and any further capability a model of the catalog has.
                extra=tuple(
                    sorted({c for s in specs for c in s.capabilities} - {"streaming", "zero_shot"})
                ),
            ),
            resident_models=self.models.resident(),
            available_models=self._catalog.ids(),
            metrics=WorkerMetrics(
                queue_depth=self._scheduler.queue_depth(),
                active_sessions=self.servicer.active_sessions(),
                rtf=self._scheduler.rtf(),
                underruns=self.servicer.underruns(),
            ),
            last_heartbeat=time.time(),
            device=self._device,
            gpus=self._gpu.latest(),
            metrics_port=self._metrics_port,
        )

    def _log_devices(self, info: DeviceInfo) -> str:
        # The deployment guide's three start-up lines, with their values as fields.
        worker = self.config.worker.name
        _LOG.info(
            "CUDA_VISIBLE_DEVICES",
            extra={"worker": worker, "cuda_visible_devices": info.cuda_visible_devices},
        )
        _LOG.info(
            "Detected GPU(s)",
            extra={"worker": worker, "gpu_count": info.gpu_count, "gpus": describe(info)},
        )
        if info.gpu_count:
            _LOG.info("Using GPU", extra={"worker": worker, "gpu": info.gpu_names[0]})
            return info.gpu_names[0]
        return "cpu"


async def _stop_task(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it to end.

    Cancelled again until it ends: redis-py can swallow a CancelledError that lands while a
    pipeline executes, and a heartbeat that outlived deregistration would bring the worker
    back into Redis.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.2)
    if not task.cancelled() and task.exception() is not None:
        _LOG.error("task failed", exc_info=task.exception(), extra={"task": task.get_name()})
