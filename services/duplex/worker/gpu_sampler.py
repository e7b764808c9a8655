"""The GPU sampler: a thread that reads NVML every `gpu.sample_interval_ms` and exports
per-GPU gauges, keeping the latest reading for the worker's Redis record.

Which GPUs: the ones CUDA shows this process. NVML ignores CUDA_VISIBLE_DEVICES, so the
variable is applied as CUDA applies it (:func:`duplex.worker.devices.visible_indices`):
CUDA device k of the process is the k-th GPU the variable names. The `gpu_id` label is the
GPU's NVML index, the number nvidia-smi shows, so that two workers pinned to GPUs 0 and 1
(each seeing its GPU as CUDA device 0) report `gpu_id="0"` and `gpu_id="1"`.

With no GPU (nvidia-ml-py missing, no driver: `NVMLError_LibraryNotFound`, any other NVML
error at start, no device, or none visible) the sampler creates no gauge at all, so no
`worker_gpu_*` series exists, and :meth:`GpuSampler.latest` is None (the record's
`gpu: none`). A value NVML cannot give (a board without power readings, an error mid-run)
is left out: its series is removed and the Redis copy says null, never a made-up zero.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from duplex.registry.records import GpuSample
from duplex.worker.devices import is_library_not_found, nvml_text, visible_indices

_LOG = logging.getLogger(__name__)

GPU_LABELS: tuple[str, ...] = ("gpu_id", "worker")

GPU_METRIC_NAMES: tuple[str, ...] = (
    "worker_gpu_utilization_percent",
    "worker_gpu_memory_used_bytes",
    "worker_gpu_memory_total_bytes",
    "worker_gpu_temperature_celsius",
    "worker_gpu_power_watts",
)
"""Every GPU series a worker exports (the first two are the deployment guide's names)."""

_HELP = (
    "GPU utilization over NVML's last sample period, percent.",
    "GPU memory in use, bytes (every process on the GPU).",
    "GPU memory in total, bytes.",
    "GPU core temperature, degrees Celsius.",
    "GPU board power draw, watts.",
)

STOP_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class _Gpu:
    gpu_id: str  # NVML index
    name: str
    handle: Any


class GpuSampler:
    """Owns one sampling thread: `start()` once, `stop()` on shutdown.

    ``nvml`` is an object with the pynvml API (default: the `pynvml` module of nvidia-ml-py);
    unit tests pass a fake. ``registry`` receives the gauges (only when a GPU exists).
    """

    def __init__(
        self,
        worker: str,
        registry: CollectorRegistry,
        *,
        interval_s: float,
        nvml: Any | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._worker = worker
        self._registry = registry
        self._interval_s = interval_s
        self._nvml: Any = nvml  # None until start() imports pynvml
        self._environ = os.environ if environ is None else environ
        self._clock = clock
        self._gpus: tuple[_Gpu, ...] = ()
        self._gauges: tuple[Gauge, ...] = ()
        self._latest: tuple[GpuSample, ...] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: dict[tuple[str, int], str] = {}  # (gpu_id, metric) -> error text
        self.rounds = 0  # sampling rounds done (tests wait on it)

    @property
    def gpu_ids(self) -> tuple[str, ...]:
        """The GPUs sampled (empty: none)."""
        return tuple(g.gpu_id for g in self._gpus)

    def latest(self) -> tuple[GpuSample, ...] | None:
        """The newest reading of every sampled GPU; None where there is no GPU."""
        with self._lock:
            return self._latest

    def start(self) -> None:
        """Find the GPUs, take a first sample, start the thread. Never raises: a machine
        without GPU is normal (blocking NVML calls: run it off the event loop)."""
        if self._thread is not None:
            raise RuntimeError("GPU sampler already started")
        nvml = self._nvml
        if nvml is None:
            try:
                nvml = self._nvml = importlib.import_module("pynvml")
            except ImportError:
                _LOG.info("no GPU metrics: nvidia-ml-py is not installed")
                return
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            reason = "no NVIDIA driver" if is_library_not_found(nvml, exc) else str(exc)
            _LOG.info("no GPU metrics", extra={"worker": self._worker, "reason": reason})
            return
        try:
            self._gpus = self._discover(nvml)
        except nvml.NVMLError as exc:
            _LOG.warning(
                "no GPU metrics: NVML query failed",
                extra={"worker": self._worker, "error": str(exc)},
            )
            self._gpus = ()
        if not self._gpus:
            _LOG.info("no GPU metrics: no GPU visible", extra={"worker": self._worker})
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()
            return
        self._gauges = tuple(
            Gauge(name, text, list(GPU_LABELS), registry=self._registry)
            for name, text in zip(GPU_METRIC_NAMES, _HELP, strict=True)
        )
        self._round()
        self._thread = threading.Thread(target=self._run, name="duplex-gpu-sampler", daemon=True)
        self._thread.start()
        _LOG.info(
            "GPU sampler started",
            extra={
                "worker": self._worker,
                "gpu_ids": ",".join(self.gpu_ids),
                "interval_s": self._interval_s,
            },
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the thread within `timeout_s`; False if it is still stuck in an NVML call
        (it is a daemon thread: it cannot keep the process alive)."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            _LOG.warning(
                "GPU sampler still busy after its stop deadline",
                extra={"worker": self._worker, "deadline_s": timeout_s},
            )
            return False
        return True

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        nvml = self._nvml
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    self._round()
                except Exception:  # thread boundary: log, sample again next time
                    _LOG.exception("GPU sampling failed", extra={"worker": self._worker})
        finally:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()

    def _discover(self, nvml: Any) -> tuple[_Gpu, ...]:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        uuids = [nvml_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
        chosen = visible_indices(uuids, self._environ.get("CUDA_VISIBLE_DEVICES"))
        return tuple(
            _Gpu(str(i), nvml_text(nvml.nvmlDeviceGetName(handles[i])), handles[i]) for i in chosen
        )

    def _round(self) -> None:
        samples = tuple(self._sample(gpu) for gpu in self._gpus)
        with self._lock:
            self._latest = samples
            self.rounds += 1

    def _sample(self, gpu: _Gpu) -> GpuSample:
        nvml = self._nvml
        h = gpu.handle
        util = self._read(gpu, 0, lambda: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu))
        memory = self._read_memory(gpu)
        temp = self._read(
            gpu, 3, lambda: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        )
        power = self._read(gpu, 4, lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)  # mW
        return GpuSample(
            gpu_id=gpu.gpu_id,
            name=gpu.name,
            util_pct=util,
            mem_used=None if memory is None else memory[0],
            mem_total=None if memory is None else memory[1],
            temp_c=temp,
            power_w=None if power is None else round(power, 3),
            sampled_at=round(self._clock(), 3),
        )

    def _read_memory(self, gpu: _Gpu) -> tuple[int, int] | None:
        nvml = self._nvml
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(gpu.handle)
            used, total = int(info.used), int(info.total)
        except nvml.NVMLError as exc:
            self._failed(gpu, 1, exc)
            self._failed(gpu, 2, exc)
            return None
        self._export(gpu, 1, used)
        self._export(gpu, 2, total)
        return used, total

    def _read(self, gpu: _Gpu, metric: int, read: Callable[[], float]) -> float | None:
        try:
            value = read()
        except self._nvml.NVMLError as exc:
            self._failed(gpu, metric, exc)
            return None
        self._export(gpu, metric, value)
        return value

    def _export(self, gpu: _Gpu, metric: int, value: float) -> None:
        self._gauges[metric].labels(gpu_id=gpu.gpu_id, worker=self._worker).set(value)
        if self._failing.pop((gpu.gpu_id, metric), None) is not None:
            _LOG.info(
                "GPU reading restored",
                extra={
                    "worker": self._worker,
                    "gpu_id": gpu.gpu_id,
                    "metric": GPU_METRIC_NAMES[metric],
                },
            )

    def _failed(self, gpu: _Gpu, metric: int, exc: BaseException) -> None:
        # No stale value stays exported: the series goes until NVML answers again.
        with contextlib.suppress(KeyError):
            self._gauges[metric].remove(gpu.gpu_id, self._worker)
        error = f"{type(exc).__name__}: {exc}"
        if self._failing.get((gpu.gpu_id, metric)) != error:
            self._failing[(gpu.gpu_id, metric)] = error
            _LOG.warning(
                "GPU reading failed; its series is left out until NVML answers",
                extra={
                    "worker": self._worker,
                    "gpu_id": gpu.gpu_id,
                    "metric": GPU_METRIC_NAMES[metric],
                    "error": error,
                },
            )
