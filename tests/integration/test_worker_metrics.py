"""A real worker's /metrics, scraped over HTTP after real synthesis, and its Redis record's
`gpu` and `metrics_port` fields: in-process, with a fake NVML, and as a process."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from duplex.devtools.redis_server import free_port
from duplex.worker.app import WorkerApp, WorkerStartupError
from duplex.worker.gpu_sampler import GPU_METRIC_NAMES
from duplex.worker.metrics import METRIC_NAMES
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.worker_fixtures import (
    LiveStream,
    running_worker,
    start_worker_process,
    stop_process,
    synthesize,
    worker_config,
    write_worker_yaml,
)
from tests.unit.test_gpu_sampler import FakeNvml

TEXT = "Hello there, this is the first clause. And here is a second sentence."
Samples = dict[str, list[tuple[dict[str, str], float]]]


def _scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        return str(reply.read().decode())


async def _scrape(url: str) -> Samples:
    """Every sample of the exposition at `url`, by sample name."""
    text = await asyncio.to_thread(_scrape_text, url)
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _one(samples: Samples, name: str, **labels: str) -> float:
    matches = [v for got, v in samples.get(name, []) if labels.items() <= got.items()]
    assert len(matches) == 1, f"{name}{labels}: {matches}"
    return matches[0]


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)


async def _hash(client: redis.Redis, key: str, limit_s: float = 5.0) -> dict[str, str]:
    deadline = time.monotonic() + limit_s
    while not (fields := client.hgetall(key)):
        assert time.monotonic() < deadline, f"{key} never appeared"
        await asyncio.sleep(0.02)
    return fields


async def test_a_worker_serves_its_metrics_after_synthesis_and_announces_the_port(
    redis_url: str,
) -> None:
    """A tone worker on a free metrics port: after two utterances /metrics holds sessions,
    first-frame, synthesis, RTF, model-load and residency series under its name, no GPU
    series on this GPU-less machine, and its Redis hash says gpu=none and the port."""
    name = "tts-tone@metrics"
    config = worker_config(redis_url, name=name, metrics_port=0)
    async with running_worker(config) as worker:
        url = worker.app.metrics_url
        assert url == f"http://127.0.0.1:{worker.app.metrics_port}/metrics"
        stream = LiveStream(worker.stub)
        await stream.open(lead_ms=0)
        live = await _scrape(url)
        assert _one(live, "duplex_worker_sessions_active", worker=name) == 1
        await stream.send(TEXT)
        await stream.finish()
        await synthesize(worker.stub, "One more utterance, in its own session.")

        samples = await _scrape(url)
        text = await asyncio.to_thread(_scrape_text, url)
        fields = await _hash(_client(redis_url), f"worker:{name}")

    assert _one(samples, "duplex_worker_sessions_active", worker=name) == 0
    assert _one(samples, "duplex_worker_queue_depth", worker=name) == 0
    assert _one(samples, "duplex_worker_underruns_total", worker=name) >= 0
    assert _one(samples, "duplex_worker_first_frame_seconds_count", worker=name) == 2
    model = {"worker": name, "model": "tone-fast"}
    clauses = _one(samples, "duplex_worker_synthesis_seconds_count", **model)
    assert clauses >= 3  # one job per clause: two sentences, then one
    assert _one(samples, "duplex_worker_rtf_count", **model) == clauses
    assert _one(samples, "duplex_worker_rtf_sum", **model) > 0
    ok = {**model, "outcome": "ok"}
    assert _one(samples, "duplex_worker_model_loads_total", **ok) == 1
    assert _one(samples, "duplex_worker_model_load_seconds_count", **model) == 1
    assert _one(samples, "duplex_worker_resident_models", worker=name) == 1
    assert _one(samples, "duplex_worker_model_resident", **model) == 1
    for family in METRIC_NAMES:  # declared, whether or not recorded yet (evictions)
        assert f"# TYPE {family} " in text, family
    assert "worker_gpu_" not in text
    labels = {key for series in samples.values() for got, _ in series for key in got}
    assert labels <= {"worker", "model", "outcome", "le"}  # never a session id

    assert fields["gpu"] == "none"
    assert fields["metrics_port"] == str(worker.app.metrics_port)


async def test_metrics_stop_with_the_worker(redis_url: str) -> None:
    """Once the worker has stopped, nothing answers on its metrics port any more."""
    async with running_worker(worker_config(redis_url, name="tts-tone@stop")) as worker:
        url = worker.app.metrics_url
        assert url is not None
        assert "duplex_worker_sessions_active" in await asyncio.to_thread(_scrape_text, url)
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(_scrape_text, url)


async def test_metrics_port_minus_one_serves_nothing_and_announces_none(redis_url: str) -> None:
    """metrics_port -1: no server, and the record says metrics_port none."""
    name = "tts-tone@nometrics"
    async with running_worker(worker_config(redis_url, name=name, metrics_port=-1)) as worker:
        assert worker.app.metrics_port is None and worker.app.metrics_url is None
        fields = await _hash(_client(redis_url), f"worker:{name}")
    assert fields["metrics_port"] == "none"


async def test_a_taken_metrics_port_stops_the_start_naming_it(redis_url: str) -> None:
    """A fixed metrics port that something else holds is a start-up error that names the
    address; nothing is left running (the model is not even loaded)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        app = WorkerApp(worker_config(redis_url, name="tts-tone@taken", metrics_port=port))
        with pytest.raises(WorkerStartupError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await app.start()
    assert app.metrics_port is None
    assert not any(t.name == "duplex-gpu-sampler" for t in threading.enumerate())


async def test_a_worker_with_a_gpu_exports_its_gauges_and_copies_them_to_redis(
    redis_url: str,
) -> None:
    """With a fake NVML (two GPUs, CUDA_VISIBLE_DEVICES unset), /metrics has every GPU gauge
    for both GPUs and the hash's gpu field is the JSON copy of the latest reading."""
    name = "tts-tone@gpu"
    config = worker_config(redis_url, name=name, gpu_sample_interval_ms=100)
    nvml = FakeNvml(
        [
            {"name": "NVIDIA H100", "uuid": "GPU-aaaa", "util": 37, "used": 1 << 30,
             "total": 80 << 30, "temp": 51, "power_mw": 123400},
            {"name": "NVIDIA L4", "uuid": "GPU-bbbb", "util": 5, "used": 1 << 29,
             "total": 24 << 30, "temp": 40, "power_mw": 31000},
        ]
    )  # fmt: skip
    async with running_worker(config, nvml=nvml) as worker:
        assert worker.app.metrics_url is not None
        samples = await _scrape(worker.app.metrics_url)
        fields = await _hash(_client(redis_url), f"worker:{name}")
    for metric in GPU_METRIC_NAMES:
        for gpu_id in ("0", "1"):
            _one(samples, metric, gpu_id=gpu_id, worker=name)
    assert _one(samples, "worker_gpu_power_watts", gpu_id="0") == pytest.approx(123.4)
    gpus = json.loads(fields["gpu"])
    assert [g["gpu_id"] for g in gpus] == ["0", "1"]
    assert gpus[1]["mem_total"] == 24 << 30 and gpus[1]["util_pct"] == 5.0
    assert nvml.shutdowns >= 1  # the sampler closed NVML when the worker stopped


async def test_a_worker_process_logs_its_metrics_url_and_serves_it(
    redis_url: str, tmp_path: Path
) -> None:
    """`python -m duplex.worker` with a fixed metrics port: the URL is in its log, /metrics
    answers with the worker's series, and the hash carries the port and gpu none."""
    name = "tts-tone@proc"
    port = free_port()
    config = worker_config(redis_url, name=name, metrics_port=port)
    proc = start_worker_process(write_worker_yaml(tmp_path / "worker.yaml", config))
    client = _client(redis_url)
    try:
        fields = await _hash(client, f"worker:{name}", limit_s=60)
        text = await asyncio.to_thread(_scrape_text, f"http://127.0.0.1:{port}/metrics")
    finally:
        output = stop_process(proc)
    assert fields["metrics_port"] == str(port) and fields["gpu"] == "none"
    assert f'duplex_worker_resident_models{{worker="{name}"}} 1.0' in text
    assert f"http://127.0.0.1:{port}/metrics" in output
    assert proc.returncode == 0, output
