"""Product processes under test (worker, orchestrator) and what we sample from them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import redis
import yaml
from duplex.devtools.redis_server import free_port
from duplex.registry import keys
from duplex.registry.records import WorkerMetrics, WorkerRecord
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Keep loopback traffic off any proxy the environment names (grpc and urllib honour them).
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")
GRPC_OPTIONS: list[tuple[str, Any]] = [("grpc.enable_http_proxy", 0)]

HEARTBEAT_MS = 500
WORKER_TTL_MS = 5000  # rides out a multi-second stall of a loaded 2-core machine


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for product subprocesses: no proxies, unbuffered logs."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ResourceSampler:
    """Samples a process's RSS (peak since the last reset) on a background thread, and
    reads its CPU time on demand."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self._proc = psutil.Process(pid)
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._peak = 0
        self._last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                rss = int(self._proc.memory_info().rss)
            except psutil.Error:
                return
            with self._lock:
                self._last = rss
                self._peak = max(self._peak, rss)
            self._stop.wait(self._interval_s)

    @property
    def rss(self) -> int:
        with self._lock:
            return self._last

    @property
    def peak_rss(self) -> int:
        with self._lock:
            return self._peak

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self._last

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process (its threads included) so far."""
        times = self._proc.cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@dataclass
class ManagedProcess:
    """A child process with its log file and sampler; ``stop`` is idempotent."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    sampler: ResourceSampler

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        self.sampler.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def spawn(name: str, args: list[str], workdir: Path) -> ManagedProcess:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=workdir,
        )
    return ManagedProcess(name, proc, log_path, ResourceSampler(proc.pid))


@dataclass
class WorkerProcess:
    """`python -m duplex.worker` on a free loopback port."""

    name: str
    port: int
    managed: ManagedProcess
    config_path: Path
    default_model_id: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    adapter_type: str
    default_model_id: str
    preload: tuple[str, ...] = ()
    onnx_threads: int = 1
    extra_worker_keys: dict[str, Any] = field(default_factory=dict)


def worker_config(spec: WorkerSpec, port: int, redis_url: str) -> dict[str, Any]:
    """The guide's worker YAML keys for one bench worker."""
    return {
        "worker": {
            "name": spec.name,
            "grpc_port": port,
            "adapter_type": spec.adapter_type,
            "host": "127.0.0.1",
            "advertise_host": "127.0.0.1",
            "onnx_threads": spec.onnx_threads,
            **spec.extra_worker_keys,
        },
        "model_manager": {
            "default_model_id": spec.default_model_id,
            "preload_model_ids": list(spec.preload or (spec.default_model_id,)),
            "resident_cap": 2,
            "ttl_ms": 0,
            "min_residency_ms": 0,
        },
        "redis": {
            "url": redis_url,
            "heartbeat_interval_ms": HEARTBEAT_MS,
            "worker_ttl_ms": WORKER_TTL_MS,
        },
        "audio": {"sample_rate": 48000, "frame_duration_ms": 20},
    }


async def start_worker(
    spec: WorkerSpec, redis_url: str, workdir: Path, *, ready_timeout_s: float = 90.0
) -> WorkerProcess:
    """Spawn the worker and wait until its health service says SERVING."""
    port = free_port()
    config_path = workdir / f"{spec.name}.yaml"
    config_path.write_text(yaml.safe_dump(worker_config(spec, port, redis_url)), encoding="utf-8")
    managed = spawn(
        f"worker-{spec.name}", ["-m", "duplex.worker", "--config", str(config_path)], workdir
    )
    worker = WorkerProcess(spec.name, port, managed, config_path, spec.default_model_id)
    try:
        await wait_serving(worker, ready_timeout_s)
    except BaseException:
        managed.stop()
        raise
    return worker


async def wait_serving(worker: WorkerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(worker.target, options=GRPC_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not worker.managed.alive():
                raise RuntimeError(
                    f"worker {worker.name} exited with {worker.managed.process.returncode}:\n"
                    + worker.managed.log_tail()
                )
            with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(
        f"worker {worker.name} not SERVING within {timeout_s:.0f} s:\n" + worker.managed.log_tail()
    )


@dataclass
class OrchestratorProcess:
    """`python -m duplex.orchestrator` on a free loopback port."""

    port: int
    managed: ManagedProcess

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def orchestrator_config(
    port: int, redis_url: str, max_connections: int, *, close_slow_clients: bool = True
) -> dict[str, Any]:
    """`close_slow_clients=False` for load tests: their clients share 2 cores with what they
    measure, and one that falls seconds behind is the bench's problem, not a stalled listener
    to be closed (`max_client_backlog_ms: 0`)."""
    websocket: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    websocket["max_connections"] = max_connections
    if not close_slow_clients:
        websocket["max_client_backlog_ms"] = 0
    return {
        "transport": {"type": "websocket", "websocket": websocket},
        "routing": {"prefer_resident_models": True, "load_balancing_strategy": "least_loaded"},
        "redis": {"url": redis_url, "worker_ttl_ms": WORKER_TTL_MS},
    }


async def start_orchestrator(
    redis_url: str,
    workdir: Path,
    *,
    max_connections: int = 400,
    ready_timeout_s: float = 60.0,
    close_slow_clients: bool = True,
) -> OrchestratorProcess:
    """Spawn the orchestrator and wait until GET /ready answers 200 (Redis + a worker)."""
    port = free_port()
    config_path = workdir / "orchestrator.yaml"
    config = orchestrator_config(
        port, redis_url, max_connections, close_slow_clients=close_slow_clients
    )
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    managed = spawn(
        "orchestrator", ["-m", "duplex.orchestrator", "--config", str(config_path)], workdir
    )
    orch = OrchestratorProcess(port, managed)
    deadline = time.monotonic() + ready_timeout_s
    try:
        while time.monotonic() < deadline:
            if not managed.alive():
                raise RuntimeError(
                    f"orchestrator exited with {managed.process.returncode}:\n" + managed.log_tail()
                )
            status, _ = await asyncio.to_thread(http_get, f"{orch.http_url}/ready", 1.0)
            if status == 200:
                return orch
            await asyncio.sleep(0.2)
        raise TimeoutError("orchestrator not ready within the deadline:\n" + managed.log_tail())
    except BaseException:
        managed.stop()
        raise


def http_get(url: str, timeout_s: float) -> tuple[int, bytes]:
    """GET on loopback without proxies; (0, b"") when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def read_worker_record(redis_url: str, name: str) -> WorkerRecord | None:
    """The worker's announced record (its `metrics` carry queue depth and under-runs)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=2.0)
    try:
        fields: dict[str, str] = client.hgetall(keys.worker_key(name))  # type: ignore[assignment]
    finally:
        client.close()
    if not fields:
        return None
    return WorkerRecord.decode(fields)


async def fresh_metrics(redis_url: str, name: str, after: float) -> WorkerMetrics | None:
    """The worker's metrics from a heartbeat later than ``after`` (unix s), or the newest
    seen within a few heartbeats."""
    deadline = time.monotonic() + 4 * HEARTBEAT_MS / 1000 + 1.0
    record: WorkerRecord | None = None
    while time.monotonic() < deadline:
        record = await asyncio.to_thread(read_worker_record, redis_url, name)
        if record is not None and record.last_heartbeat > after:
            return record.metrics
        await asyncio.sleep(HEARTBEAT_MS / 4000)
    return record.metrics if record is not None else None
