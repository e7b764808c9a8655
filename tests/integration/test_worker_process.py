"""The worker as a process and as a Redis citizen: the `worker:{name}` hash, its TTL and
heartbeats, Redis restarts and outages, kill -9, SIGTERM drain, start-up failures."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from duplex.devtools.redis_server import RedisProcess

from tests.integration.worker_fixtures import (
    REPO,
    LiveStream,
    running_worker,
    start_worker_process,
    stop_process,
    synthesize,
    worker_config,
    write_worker_yaml,
)

GUIDE_FIELDS = {
    "name",
    "addr",
    "adapter_type",
    "capabilities",
    "resident_models",
    "metrics",
    "last_heartbeat",
}


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)


async def _until(predicate: object, limit_s: float, step_s: float = 0.02) -> float:
    """Poll `predicate()` until true; returns the seconds it took (fails after `limit_s`)."""
    assert callable(predicate)
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"condition not met within {limit_s}s")
        await asyncio.sleep(step_s)
    return time.monotonic() - started


def _wait_sync(predicate: object, limit_s: float, step_s: float = 0.02) -> float:
    assert callable(predicate)
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"condition not met within {limit_s}s")
        time.sleep(step_s)
    return time.monotonic() - started


# -- in-process: the hash, its TTL and heartbeats ---------------------------------------------


async def test_the_worker_hash_has_the_guides_fields_and_a_ttl(redis_url: str) -> None:
    """`worker:{name}` carries the guide's fields (JSON where the guide has JSON) and expires."""
    client = _client(redis_url)
    async with running_worker(worker_config(redis_url, name="tts-tone@0")) as worker:
        await _until(lambda: client.exists("worker:tts-tone@0"), 5)
        fields = client.hgetall("worker:tts-tone@0")
        assert set(fields) >= GUIDE_FIELDS
        assert fields["name"] == "tts-tone@0"
        assert fields["addr"] == f"grpc://127.0.0.1:{worker.app.port}"
        assert fields["adapter_type"] == "tone"
        capabilities = json.loads(fields["capabilities"])
        assert capabilities["streaming"] is True and capabilities["zero_shot"] is False
        assert "en" in capabilities["languages"]
        assert json.loads(fields["resident_models"]) == ["tone-fast"]
        assert set(json.loads(fields["available_models"])) == {"tone-fast", "tone-rt02"}
        metrics = json.loads(fields["metrics"])
        assert {"queue_depth", "active_sessions", "rtf"} <= set(metrics)
        assert abs(float(fields["last_heartbeat"]) - time.time()) < 5
        assert 0 < client.pttl("worker:tts-tone@0") <= 1000
        assert client.zscore("workers:live", "tts-tone@0") is not None
    # drain_and_stop deregistered it at once.
    assert not client.exists("worker:tts-tone@0")
    assert client.zscore("workers:live", "tts-tone@0") is None
    client.close()


async def test_heartbeats_refresh_last_heartbeat_and_measured_metrics(redis_url: str) -> None:
    """Later heartbeats carry a newer timestamp, the open session and a measured rtf."""
    client = _client(redis_url)
    async with running_worker(worker_config(redis_url, default_model_id="tone-rt02")) as worker:
        await _until(lambda: client.exists("worker:test-worker"), 5)
        first = float(client.hget("worker:test-worker", "last_heartbeat") or 0)
        await synthesize(worker.stub, "Measure me.", lead_ms=0)  # tone-rt02: rtf 0.2
        stream = LiveStream(worker.stub)
        await stream.open()  # the session is live now

        def active() -> bool:
            metrics = json.loads(client.hget("worker:test-worker", "metrics") or "{}")
            return bool(metrics.get("active_sessions") == 1)

        await _until(active, 3)
        later = float(client.hget("worker:test-worker", "last_heartbeat") or 0)
        assert later > first
        metrics = json.loads(client.hget("worker:test-worker", "metrics") or "{}")
        assert 0.1 < metrics["rtf"] < 1.0  # measured from the real (paced) synthesis
        await stream.finish()
    client.close()


async def test_the_worker_is_back_one_heartbeat_after_a_redis_restart(
    redis_url: str, redis_process: RedisProcess
) -> None:
    """Redis restarts empty: the worker re-registers by itself within one heartbeat (+ slack)."""
    client = _client(redis_url)
    async with running_worker(worker_config(redis_url, heartbeat_interval_ms=200)):
        await _until(lambda: client.exists("worker:test-worker"), 5)
        redis_process.restart()
        client = _client(redis_url)
        took = await _until(lambda: client.exists("worker:test-worker"), 5)
        assert took <= 0.2 + 0.3
        assert client.zscore("workers:live", "test-worker") is not None
    client.close()


async def test_the_worker_keeps_serving_while_redis_is_down(
    redis_url: str, redis_process: RedisProcess
) -> None:
    """With Redis gone, sessions still work; the worker returns once Redis does."""
    async with running_worker(worker_config(redis_url)) as worker:
        redis_process.stop(kill=True)
        try:
            await asyncio.sleep(0.5)  # a few failed heartbeats
            got = await synthesize(worker.stub, "Redis is down.", lead_ms=0)
            assert got.ends and got.ends[0].voiced_length == len("Redis is down.")
        finally:
            redis_process.restart()
        client = _client(redis_url)
        await _until(lambda: client.exists("worker:test-worker"), 2)
        client.close()


# -- as a process --------------------------------------------------------------------------------


@pytest.fixture
def tone_yaml(tmp_path: Path, redis_url: str) -> Path:
    config = worker_config(
        redis_url, name="proc-worker", heartbeat_interval_ms=200, worker_ttl_ms=1000
    )
    return write_worker_yaml(tmp_path / "worker.yaml", config)


def test_kill_9_leaves_redis_within_worker_ttl(tone_yaml: Path, redis_url: str) -> None:
    """After SIGKILL the hash expires within worker_ttl_ms (1 s) of the kill."""
    client = _client(redis_url)
    proc = start_worker_process(tone_yaml)
    try:
        _wait_sync(lambda: client.exists("worker:proc-worker") or proc.poll() is not None, 60)
        assert proc.poll() is None, stop_process(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        _wait_sync(lambda: not client.exists("worker:proc-worker"), 5, step_s=0.01)
        assert time.monotonic() - killed <= 1.0 + 0.25  # worker_ttl_ms + polling slack
    finally:
        stop_process(proc)
        client.close()


def test_sigterm_drains_deregisters_and_exits_zero(tone_yaml: Path, redis_url: str) -> None:
    """SIGTERM: the worker leaves Redis at once (not by TTL) and exits 0; it logged its GPUs."""
    client = _client(redis_url)
    proc = start_worker_process(tone_yaml)
    try:
        _wait_sync(lambda: client.exists("worker:proc-worker") or proc.poll() is not None, 60)
        assert proc.poll() is None, stop_process(proc)
        addr = str(client.hget("worker:proc-worker", "addr") or "")
        assert addr.startswith("grpc://127.0.0.1:") and not addr.endswith(":0")
        output = stop_process(proc, sig=signal.SIGTERM)
        assert proc.returncode == 0, output
        assert not client.exists("worker:proc-worker")
        # Structured logs: one JSON object per line when not on a terminal, values as fields.
        records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        by_msg = {r["msg"]: r for r in records}
        assert "cuda_visible_devices" in by_msg["CUDA_VISIBLE_DEVICES"]
        assert isinstance(by_msg["Detected GPU(s)"]["gpu_count"], int)
        assert by_msg["worker ready"]["worker"] == "proc-worker"
        assert by_msg["worker stopped"]["worker"] == "proc-worker"
    finally:
        stop_process(proc)
        client.close()


def test_a_default_model_that_cannot_load_is_fatal(tmp_path: Path, redis_url: str) -> None:
    """Unknown default model: exit status 1 and a message naming it."""
    config = worker_config(redis_url, default_model_id="tone-nope")
    path = write_worker_yaml(tmp_path / "bad.yaml", config)
    proc = start_worker_process(path)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    assert "default model failed to load" in output and "tone-nope" in output


def test_an_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    """A typo in the YAML stops the worker before anything starts."""
    path = tmp_path / "typo.yaml"
    path.write_text(
        "worker:\n  name: w\n  grpc_port: 0\n  adapter_type: tone\n  grpc_prot: 1\n"
        "model_manager:\n  default_model_id: tone-fast\n",
        encoding="utf-8",
    )
    proc = start_worker_process(path)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert "worker.grpc_prot" in output


def test_help_lists_the_options_and_the_environment_overrides() -> None:
    """`python -m duplex.worker --help` documents --config, --log-level and the env vars."""
    done = subprocess.run(
        [sys.executable, "-m", "duplex.worker", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert "--config" in done.stdout and "--log-level" in done.stdout
    assert "DUPLEX_WORKER_NAME" in done.stdout and "REDIS_URL" in done.stdout
