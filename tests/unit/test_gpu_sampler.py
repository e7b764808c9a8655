"""The GPU sampler against a fake NVML library object: the gauges it exports, the copy for
the Redis record, no series without a GPU, errors mid-run, and its thread's stop."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from duplex.registry.records import (
    Capabilities,
    GpuSample,
    WorkerMetrics,
    WorkerRecord,
)
from duplex.worker.gpu_sampler import GPU_LABELS, GPU_METRIC_NAMES, GpuSampler
from prometheus_client import CollectorRegistry, generate_latest

W = "tts-piper@0"
NOW = 1_800_000_000.5
GIB = 1 << 30


class FakeNvml:
    """The part of pynvml's API the sampler uses; values and failures set by the test."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    @dataclass
    class Util:
        gpu: int
        memory: int = 0

    @dataclass
    class Memory:
        used: int
        total: int
        free: int = 0

    def __init__(self, gpus: list[dict[str, Any]], init_error: Exception | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.inits = 0
        self.shutdowns = 0
        self.fail: dict[tuple[int, str], Exception] = {}  # (index, call) -> raised
        self.calls = 0
        self.block: threading.Event | None = None  # a hung driver call

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> Any:
        return str(self.gpus[handle]["name"]).encode()  # older bindings return bytes

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return str(self.gpus[handle]["uuid"])

    def _check(self, handle: int, call: str) -> dict[str, Any]:
        self.calls += 1
        if self.block is not None:
            self.block.wait(10)
        error = self.fail.get((handle, call))
        if error is not None:
            raise error
        return self.gpus[handle]

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> FakeNvml.Util:
        return FakeNvml.Util(self._check(handle, "util")["util"])

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> FakeNvml.Memory:
        gpu = self._check(handle, "memory")
        return FakeNvml.Memory(gpu["used"], gpu["total"])

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return int(self._check(handle, "temp")["temp"])

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return int(self._check(handle, "power")["power_mw"])


def _gpus() -> list[dict[str, Any]]:
    return [
        {"name": "NVIDIA H100", "uuid": "GPU-aaaa", "util": 37, "used": 20 * GIB,
         "total": 80 * GIB, "temp": 51, "power_mw": 123400},
        {"name": "NVIDIA L4", "uuid": "GPU-bbbb", "util": 5, "used": 1 * GIB,
         "total": 24 * GIB, "temp": 40, "power_mw": 31000},
    ]  # fmt: skip


def _sampler(
    nvml: FakeNvml,
    registry: CollectorRegistry,
    *,
    cuda_visible: str | None = None,
    interval_s: float = 60.0,
) -> GpuSampler:
    environ = {} if cuda_visible is None else {"CUDA_VISIBLE_DEVICES": cuda_visible}
    return GpuSampler(
        W, registry, interval_s=interval_s, nvml=nvml, environ=environ, clock=lambda: NOW
    )


def _value(registry: CollectorRegistry, name: str, gpu_id: str) -> float | None:
    return registry.get_sample_value(name, {"gpu_id": gpu_id, "worker": W})


def _wait(condition: Any, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def _record(gpus: tuple[GpuSample, ...] | None) -> dict[str, str]:
    return WorkerRecord(
        name=W,
        addr="grpc://localhost:7001",
        adapter_type="piper",
        capabilities=Capabilities(),
        resident_models=(),
        available_models=(),
        metrics=WorkerMetrics(),
        last_heartbeat=NOW,
        gpus=gpus,
        metrics_port=9101,
    ).encode()


def test_each_visible_gpu_is_exported_under_the_guides_names_and_labels() -> None:
    """Utilization %, memory used/total bytes, temperature °C and power W (from mW), each
    labelled gpu_id and worker, for every GPU, right after start."""
    registry = CollectorRegistry()
    sampler = _sampler(FakeNvml(_gpus()), registry)
    sampler.start()
    try:
        assert sampler.gpu_ids == ("0", "1")
        assert _value(registry, "worker_gpu_utilization_percent", "0") == 37
        assert _value(registry, "worker_gpu_memory_used_bytes", "0") == 20 * GIB
        assert _value(registry, "worker_gpu_memory_total_bytes", "0") == 80 * GIB
        assert _value(registry, "worker_gpu_temperature_celsius", "0") == 51
        assert _value(registry, "worker_gpu_power_watts", "0") == pytest.approx(123.4)
        assert _value(registry, "worker_gpu_utilization_percent", "1") == 5
        assert _value(registry, "worker_gpu_power_watts", "1") == pytest.approx(31.0)
    finally:
        assert sampler.stop()
    exported = {f.name for f in registry.collect()}
    assert exported == set(GPU_METRIC_NAMES)
    labels = {tuple(sorted(s.labels)) for f in registry.collect() for s in f.samples}
    assert labels == {tuple(sorted(GPU_LABELS))}


def test_the_redis_copy_is_compact_json_with_every_reading() -> None:
    """The record's `gpu` field is a compact JSON list of the latest reading per GPU."""
    sampler = _sampler(FakeNvml(_gpus()), CollectorRegistry())
    sampler.start()
    sampler.stop()
    raw = _record(sampler.latest())["gpu"]
    assert " " not in raw.replace("NVIDIA H100", "").replace("NVIDIA L4", "")
    assert json.loads(raw)[0] == {
        "gpu_id": "0",
        "name": "NVIDIA H100",
        "util_pct": 37.0,
        "mem_used": 20 * GIB,
        "mem_total": 80 * GIB,
        "temp_c": 51.0,
        "power_w": 123.4,
        "sampled_at": NOW,
    }
    assert WorkerRecord.decode(_record(sampler.latest())).gpus == sampler.latest()


def test_cuda_visible_devices_picks_the_gpus_and_gpu_id_is_the_nvml_index() -> None:
    """CUDA_VISIBLE_DEVICES=1 (or GPU 1's UUID): only GPU 1 is sampled, labelled as
    nvidia-smi numbers it, although CUDA calls it device 0 in this process."""
    for visible in ("1", "GPU-bbbb"):
        registry = CollectorRegistry()
        sampler = _sampler(FakeNvml(_gpus()), registry, cuda_visible=visible)
        sampler.start()
        sampler.stop()
        assert sampler.gpu_ids == ("1",)
        assert _value(registry, "worker_gpu_utilization_percent", "1") == 5
        assert _value(registry, "worker_gpu_utilization_percent", "0") is None
        latest = sampler.latest()
        assert latest is not None and [g.name for g in latest] == ["NVIDIA L4"]


@pytest.mark.parametrize(
    ("nvml", "cuda_visible"),
    [
        (FakeNvml(_gpus(), FakeNvml.NVMLError_LibraryNotFound("libnvidia-ml.so.1")), None),
        (FakeNvml(_gpus(), FakeNvml.NVMLError("Driver Not Loaded")), None),
        (FakeNvml([]), None),
        (FakeNvml(_gpus()), ""),
    ],
    ids=["no-driver", "nvml-error", "no-device", "none-visible"],
)
def test_without_a_gpu_there_is_no_series_at_all_and_the_record_says_none(
    nvml: FakeNvml, cuda_visible: str | None
) -> None:
    """No driver, an NVML error at start, no device or none visible: no worker_gpu_ line in
    the exposition (not even HELP), no thread, `gpu: none` in the record."""
    registry = CollectorRegistry()
    sampler = _sampler(nvml, registry, cuda_visible=cuda_visible)
    sampler.start()
    assert sampler.latest() is None
    assert "worker_gpu_" not in generate_latest(registry).decode()
    assert _record(sampler.latest())["gpu"] == "none"
    assert WorkerRecord.decode(_record(None)).gpus is None
    assert sampler.stop()
    assert nvml.calls == 0


def test_the_real_nvml_on_this_machine_gives_no_series_or_real_ones() -> None:
    """With nvidia-ml-py itself: no GPU here means no series and None; a GPU means series."""
    registry = CollectorRegistry()
    sampler = GpuSampler(W, registry, interval_s=60.0)
    sampler.start()
    try:
        text = generate_latest(registry).decode()
        if sampler.latest() is None:
            assert "worker_gpu_" not in text
        else:
            assert all(name in text for name in GPU_METRIC_NAMES)
    finally:
        assert sampler.stop()


def test_an_unsupported_reading_is_left_out_never_a_zero(caplog: pytest.LogCaptureFixture) -> None:
    """A board without power readings: no power series for it, null in the Redis copy, one
    warning; the other readings are exported."""
    nvml = FakeNvml(_gpus())
    nvml.fail[(0, "power")] = FakeNvml.NVMLError_NotSupported("Not Supported")
    registry = CollectorRegistry()
    sampler = _sampler(nvml, registry, interval_s=0.01)
    with caplog.at_level(logging.WARNING, logger="duplex.worker.gpu_sampler"):
        sampler.start()
        _wait(lambda: sampler.rounds >= 3)
        sampler.stop()
    assert _value(registry, "worker_gpu_power_watts", "0") is None
    assert _value(registry, "worker_gpu_power_watts", "1") == pytest.approx(31.0)
    assert _value(registry, "worker_gpu_temperature_celsius", "0") == 51
    latest = sampler.latest()
    assert latest is not None and latest[0].power_w is None and latest[1].power_w == 31.0
    assert json.loads(_record(latest)["gpu"])[0]["power_w"] is None
    warnings = [r for r in caplog.records if "GPU reading failed" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per round
    assert getattr(warnings[0], "metric", None) == "worker_gpu_power_watts"


def test_an_error_mid_run_removes_the_stale_series_and_a_recovery_restores_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """NVML fails on GPU 1's memory after start: its memory series go (no stale value), the
    thread lives on, and they come back with fresh values once NVML answers."""
    nvml = FakeNvml(_gpus())
    registry = CollectorRegistry()
    sampler = _sampler(nvml, registry, interval_s=0.01)
    sampler.start()
    try:
        assert _value(registry, "worker_gpu_memory_used_bytes", "1") == 1 * GIB
        with caplog.at_level(logging.INFO, logger="duplex.worker.gpu_sampler"):
            nvml.fail[(1, "memory")] = FakeNvml.NVMLError("GPU is lost")
            _wait(lambda: _value(registry, "worker_gpu_memory_used_bytes", "1") is None)
            assert _value(registry, "worker_gpu_memory_total_bytes", "1") is None

            def latest_lacks_memory() -> bool:  # the record copy follows within the round
                latest = sampler.latest()
                return latest is not None and latest[1].mem_used is None

            _wait(latest_lacks_memory)
            nvml.gpus[1]["used"] = 3 * GIB
            del nvml.fail[(1, "memory")]
            _wait(lambda: _value(registry, "worker_gpu_memory_used_bytes", "1") == 3 * GIB)
        messages = [r.getMessage() for r in caplog.records]
        assert any("GPU reading failed" in m for m in messages)
        assert any("GPU reading restored" in m for m in messages)
    finally:
        assert sampler.stop()


def test_an_unexpected_exception_in_a_round_is_logged_and_sampling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A round that raises something other than an NVML error is logged; later rounds run."""
    nvml = FakeNvml(_gpus())
    sampler = _sampler(nvml, CollectorRegistry(), interval_s=0.01)
    sampler.start()
    try:
        with caplog.at_level(logging.ERROR, logger="duplex.worker.gpu_sampler"):
            nvml.fail[(0, "util")] = ZeroDivisionError("bug")
            _wait(lambda: any("GPU sampling failed" in r.getMessage() for r in caplog.records))
            del nvml.fail[(0, "util")]
            done = sampler.rounds
            _wait(lambda: sampler.rounds > done)
    finally:
        assert sampler.stop()


def test_the_thread_samples_every_interval_and_stops_closing_nvml() -> None:
    """The thread takes rounds while running; stop() ends it within its deadline and shuts
    NVML down; no round happens after."""
    nvml = FakeNvml(_gpus())
    sampler = _sampler(nvml, CollectorRegistry(), interval_s=0.01)
    sampler.start()
    _wait(lambda: sampler.rounds >= 3)
    assert sampler.stop(timeout_s=2.0)
    assert not any(t.name == "duplex-gpu-sampler" for t in threading.enumerate())
    assert nvml.shutdowns == 1
    rounds = sampler.rounds
    time.sleep(0.05)
    assert sampler.rounds == rounds


def test_a_hung_driver_call_makes_stop_give_up_at_its_deadline() -> None:
    """A GPU that hangs an NVML call cannot hold the worker's shutdown: stop() returns False
    at its deadline (the thread is a daemon)."""
    nvml = FakeNvml(_gpus())
    sampler = _sampler(nvml, CollectorRegistry(), interval_s=0.01)
    sampler.start()
    nvml.block = threading.Event()
    calls = nvml.calls
    _wait(lambda: nvml.calls > calls)
    assert sampler.stop(timeout_s=0.2) is False
    nvml.block.set()
    _wait(lambda: not any(t.name == "duplex-gpu-sampler" for t in threading.enumerate()))
