"""The worker's configuration: the deployment guide's YAML keys, then environment overrides.

```yaml
worker:         {name, grpc_port, adapter_type, host, advertise_host, inference_threads,
                 onnx_threads, output_lead_ms, max_text_chars, first_clause_max_chars,
                 session_jobs_in_flight, drain_grace_s, use_cuda, device, lone_job_threads,
                 metrics_port, metrics_host}
model_manager:  {default_model_id, preload_model_ids, resident_cap, ttl_ms,
                 min_residency_ms, max_parallel_loads, warmup_text}   (ModelManagerConfig)
redis:          {url, heartbeat_interval_ms, worker_ttl_ms}
audio:          {sample_rate, frame_duration_ms}
gpu:            {sample_interval_ms}
```

Unknown keys and wrongly typed values are errors that name the key (the loading itself is
:mod:`duplex.configfile`, shared with the orchestrator). Every override is listed in
:data:`ENV_OVERRIDES` (the source of `.env.example`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from duplex.configfile import ConfigError as ConfigError
from duplex.configfile import apply_env, build_section, read_yaml
from duplex.registry._connect import check_redis_url
from duplex.worker.adapters.base import AdapterOptions, Device
from duplex.worker.model_manager import ModelManagerConfig

SUPPORTED_SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Output rates a session may ask for (each gives a whole number of samples per frame)."""

SUPPORTED_FRAME_MS: tuple[int, ...] = (10, 20, 40)

METRICS_FREE_PORT = 0
"""`worker.metrics_port` value: serve /metrics on a free port chosen at start."""

METRICS_OFF = -1
"""`worker.metrics_port` value: serve no /metrics."""


@dataclass(frozen=True)
class WorkerSection:
    """Identity, network and engine settings of one worker process."""

    name: str
    grpc_port: int
    adapter_type: str
    host: str = "127.0.0.1"  # address the gRPC server binds
    advertise_host: str = "localhost"  # host in the announced addr "grpc://host:port"
    inference_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    onnx_threads: int = 1
    output_lead_ms: int = 100
    max_text_chars: int = 2000
    # An utterance's first clause is cut at a word within this many characters, so a long
    # opening sentence does not delay the first audio (0: no limit). Piper's time to the first
    # sample grows with the clause's audio: 28 against 40 gave 0.74-0.78x the first-audio p50
    # (A/B, same run); a sentence up to 28 characters stays whole.
    first_clause_max_chars: int = 28
    # Clause jobs one session may have on the scheduler at once: with 2, the next clause
    # synthesizes on another inference thread while the current one runs (faster for one
    # client at lead 0, but under load a running look-ahead job delays newcomers' first audio).
    session_jobs_in_flight: int = 1
    drain_grace_s: float = 10.0
    use_cuda: bool = True
    # auto: CUDA when onnxruntime has it and it really runs; cpu: never; cuda: CUDA or the
    # model fails to load (no silent CPU fallback).
    device: Device = Device.AUTO
    # Intra-op threads of a second session per model, for a clause job that runs alone
    # (nothing else queued or running): one client gets all the cores, a busy worker one
    # thread per job. 0, 1 or not above onnx_threads: no second session.
    lone_job_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Prometheus /metrics: a fixed port (unique per worker on a host, 9101 and up in the
    # shipped files), 0 for a free port chosen at start (announced in Redis as metrics_port),
    # -1 for none. 0 by default so that several workers in one process or host never clash.
    metrics_port: int = METRICS_FREE_PORT
    metrics_host: str = "127.0.0.1"  # the address /metrics binds ("0.0.0.0" in a container)

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "worker.name must not be empty")
        _require(bool(self.adapter_type.strip()), "worker.adapter_type must not be empty")
        _require(0 <= self.grpc_port <= 65535, "worker.grpc_port must be in 0..65535")
        _require(self.inference_threads >= 1, "worker.inference_threads must be >= 1")
        _require(self.onnx_threads >= 1, "worker.onnx_threads must be >= 1")
        _require(self.output_lead_ms >= 0, "worker.output_lead_ms must be >= 0")
        _require(self.max_text_chars >= 1, "worker.max_text_chars must be >= 1")
        _require(self.first_clause_max_chars >= 0, "worker.first_clause_max_chars must be >= 0")
        _require(self.session_jobs_in_flight >= 1, "worker.session_jobs_in_flight must be >= 1")
        _require(self.drain_grace_s >= 0, "worker.drain_grace_s must be >= 0")
        _require(
            self.use_cuda or self.device is not Device.CUDA,
            "worker.device cuda contradicts worker.use_cuda false",
        )
        _require(self.lone_job_threads >= 0, "worker.lone_job_threads must be >= 0")
        _require(
            self.metrics_port == METRICS_OFF or 0 <= self.metrics_port <= 65535,
            "worker.metrics_port must be in 0..65535 (0: a free port), or -1 (no metrics)",
        )
        _require(bool(self.metrics_host.strip()), "worker.metrics_host must not be empty")

    @property
    def metrics_enabled(self) -> bool:
        """Whether the worker serves /metrics at all."""
        return self.metrics_port != METRICS_OFF

    def adapter_options(self) -> AdapterOptions:
        """The engine settings every model of this worker loads with."""
        device = self.device if self.use_cuda else Device.CPU
        return AdapterOptions.for_device(
            device, onnx_threads=self.onnx_threads, lone_job_threads=self.lone_job_threads
        )


@dataclass(frozen=True)
class RedisSection:
    """Where and how often the worker announces itself."""

    url: str = "redis://localhost:6379"
    heartbeat_interval_ms: int = 5000
    worker_ttl_ms: int = 15000

    def __post_init__(self) -> None:
        problem = check_redis_url(self.url)
        _require(problem is None, problem or "")
        _require(self.heartbeat_interval_ms > 0, "redis.heartbeat_interval_ms must be > 0")
        _require(
            self.worker_ttl_ms > self.heartbeat_interval_ms,
            "redis.worker_ttl_ms must be greater than redis.heartbeat_interval_ms",
        )


@dataclass(frozen=True)
class AudioSection:
    """The default output format of every session."""

    sample_rate: int = 48000
    frame_duration_ms: int = 20

    def __post_init__(self) -> None:
        _require(
            self.sample_rate in SUPPORTED_SAMPLE_RATES,
            f"audio.sample_rate must be one of {list(SUPPORTED_SAMPLE_RATES)}",
        )
        _require(
            self.frame_duration_ms in SUPPORTED_FRAME_MS,
            f"audio.frame_duration_ms must be one of {list(SUPPORTED_FRAME_MS)}",
        )


@dataclass(frozen=True)
class GpuSection:
    """The GPU sampler: how often NVML is read (the sampler runs only where a GPU is seen)."""

    sample_interval_ms: int = 1000

    def __post_init__(self) -> None:
        _require(self.sample_interval_ms >= 100, "gpu.sample_interval_ms must be >= 100")


@dataclass(frozen=True)
class WorkerConfig:
    """Everything `python -m duplex.worker` needs."""

    worker: WorkerSection
    model_manager: ModelManagerConfig
    redis: RedisSection = field(default_factory=RedisSection)
    audio: AudioSection = field(default_factory=AudioSection)
    gpu: GpuSection = field(default_factory=GpuSection)


ENV_OVERRIDES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "DUPLEX_WORKER_NAME": ("worker", "name"),
        "DUPLEX_WORKER_GRPC_PORT": ("worker", "grpc_port"),
        "DUPLEX_WORKER_ADAPTER_TYPE": ("worker", "adapter_type"),
        "DUPLEX_WORKER_HOST": ("worker", "host"),
        "DUPLEX_WORKER_ADVERTISE_HOST": ("worker", "advertise_host"),
        "DUPLEX_INFERENCE_THREADS": ("worker", "inference_threads"),
        "DUPLEX_ONNX_THREADS": ("worker", "onnx_threads"),
        "DUPLEX_OUTPUT_LEAD_MS": ("worker", "output_lead_ms"),
        "DUPLEX_MAX_TEXT_CHARS": ("worker", "max_text_chars"),
        "DUPLEX_FIRST_CLAUSE_MAX_CHARS": ("worker", "first_clause_max_chars"),
        "DUPLEX_SESSION_JOBS_IN_FLIGHT": ("worker", "session_jobs_in_flight"),
        "DUPLEX_DRAIN_GRACE_S": ("worker", "drain_grace_s"),
        "DUPLEX_USE_CUDA": ("worker", "use_cuda"),
        "DUPLEX_DEVICE": ("worker", "device"),
        "DUPLEX_LONE_JOB_THREADS": ("worker", "lone_job_threads"),
        "DUPLEX_WORKER_METRICS_PORT": ("worker", "metrics_port"),
        "DUPLEX_WORKER_METRICS_HOST": ("worker", "metrics_host"),
        "DUPLEX_DEFAULT_MODEL_ID": ("model_manager", "default_model_id"),
        "DUPLEX_PRELOAD_MODEL_IDS": ("model_manager", "preload_model_ids"),
        "DUPLEX_RESIDENT_CAP": ("model_manager", "resident_cap"),
        "DUPLEX_MODEL_TTL_MS": ("model_manager", "ttl_ms"),
        "DUPLEX_MIN_RESIDENCY_MS": ("model_manager", "min_residency_ms"),
        "DUPLEX_MAX_PARALLEL_LOADS": ("model_manager", "max_parallel_loads"),
        "REDIS_URL": ("redis", "url"),
        "DUPLEX_HEARTBEAT_INTERVAL_MS": ("redis", "heartbeat_interval_ms"),
        "DUPLEX_WORKER_TTL_MS": ("redis", "worker_ttl_ms"),
        "DUPLEX_SAMPLE_RATE": ("audio", "sample_rate"),
        "DUPLEX_FRAME_DURATION_MS": ("audio", "frame_duration_ms"),
        "DUPLEX_GPU_SAMPLE_INTERVAL_MS": ("gpu", "sample_interval_ms"),
    }
)
"""Environment variable -> (section, key). Lists are comma-separated; booleans are
true/false, 1/0, yes/no or on/off."""


def load_worker_config(path: Path | None, env: Mapping[str, str]) -> WorkerConfig:
    """Read `path` (None: no file), apply the overrides found in `env`, validate."""
    raw = read_yaml(path) if path is not None else {}
    return build_section(WorkerConfig, apply_env(raw, env, ENV_OVERRIDES))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
