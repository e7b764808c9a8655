"""Helpers to run real workers in tests: in-process on port 0, or as a subprocess.

Importable from any test (`from tests.integration.worker_fixtures import running_worker`):

    async with running_worker(worker_config(redis_url)) as worker:
        result = await synthesize(worker.stub, "Hello there.")
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from duplex.gen.tts.v1 import tts_pb2, tts_pb2_grpc
from duplex.worker.app import WorkerApp
from duplex.worker.catalog import Catalog
from duplex.worker.config import (
    AudioSection,
    GpuSection,
    RedisSection,
    WorkerConfig,
    WorkerSection,
)
from duplex.worker.model_manager import ModelManagerConfig

REPO = Path(__file__).resolve().parents[2]
RPC_TIMEOUT_S = 10.0


def worker_config(
    redis_url: str,
    *,
    name: str = "test-worker",
    adapter_type: str = "tone",
    default_model_id: str = "tone-fast",
    preload_model_ids: tuple[str, ...] = (),
    resident_cap: int = 2,
    ttl_ms: int = 0,
    min_residency_ms: int = 0,
    output_lead_ms: int = 100,
    max_text_chars: int = 2000,
    drain_grace_s: float = 2.0,
    heartbeat_interval_ms: int = 200,
    worker_ttl_ms: int = 1000,
    sample_rate: int = 48000,
    inference_threads: int = 2,
    metrics_port: int = 0,
    gpu_sample_interval_ms: int = 1000,
) -> WorkerConfig:
    """A worker on 127.0.0.1, port 0 (and /metrics on a free port), fast heartbeats; the tone
    voice unless told otherwise."""
    return WorkerConfig(
        worker=WorkerSection(
            name=name,
            grpc_port=0,
            adapter_type=adapter_type,
            host="127.0.0.1",
            advertise_host="127.0.0.1",
            inference_threads=inference_threads,
            onnx_threads=1,
            output_lead_ms=output_lead_ms,
            max_text_chars=max_text_chars,
            drain_grace_s=drain_grace_s,
            use_cuda=False,
            metrics_port=metrics_port,
            metrics_host="127.0.0.1",
        ),
        model_manager=ModelManagerConfig(
            default_model_id=default_model_id,
            preload_model_ids=preload_model_ids,
            resident_cap=resident_cap,
            ttl_ms=ttl_ms,
            min_residency_ms=min_residency_ms,
        ),
        redis=RedisSection(
            url=redis_url,
            heartbeat_interval_ms=heartbeat_interval_ms,
            worker_ttl_ms=worker_ttl_ms,
        ),
        audio=AudioSection(sample_rate=sample_rate, frame_duration_ms=20),
        gpu=GpuSection(sample_interval_ms=gpu_sample_interval_ms),
    )


def piper_config(redis_url: str, **overrides: Any) -> WorkerConfig:
    """A worker serving the real Piper voice (piper-en-joe-medium)."""
    overrides.setdefault("name", "test-piper")
    return worker_config(
        redis_url, adapter_type="piper", default_model_id="piper-en-joe-medium", **overrides
    )


@dataclass
class RunningWorker:
    """An in-process worker and a client channel to it."""

    app: WorkerApp
    channel: grpc.aio.Channel
    stub: Any  # tts_pb2_grpc.TTSWorkerStub
    target: str  # "127.0.0.1:port"


@asynccontextmanager
async def running_worker(
    config: WorkerConfig, *, catalog: Catalog | None = None, nvml: Any | None = None
) -> AsyncIterator[RunningWorker]:
    """Start a WorkerApp on a free port; drain and stop it on exit. `nvml`: a fake NVML
    library object for the GPU sampler (None: the real nvidia-ml-py)."""
    app = WorkerApp(config, catalog=catalog, nvml=nvml)
    port = await app.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(target)
    try:
        yield RunningWorker(app, channel, tts_pb2_grpc.TTSWorkerStub(channel), target)
    finally:
        await channel.close()
        await app.drain_and_stop()


@dataclass
class Received:
    """Everything one Synthesize call got back, with monotonic arrival times."""

    opened: Any = None
    frames: list[Any] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    ends: list[Any] = field(default_factory=list)
    end_times: list[float] = field(default_factory=list)

    @property
    def pcm(self) -> bytes:
        return b"".join(f.pcm for f in self.frames)


def open_request(
    *, session_id: str = "", model_id: str = "", sample_rate: int = 0, lead_ms: int | None = 0
) -> Any:
    """The first SynthesizeRequest of a stream (lead_ms None: the worker's default)."""
    opening = tts_pb2.SessionOpen(session_id=session_id, model_id=model_id, sample_rate=sample_rate)
    if lead_ms is not None:
        opening.lead_ms = lead_ms
    return tts_pb2.SynthesizeRequest(open=opening)


def text_request(text: str, *, is_final: bool = True) -> Any:
    return tts_pb2.SynthesizeRequest(text=tts_pb2.TextChunk(text=text, is_final=is_final))


async def synthesize(
    stub: Any,
    text: str,
    *,
    model_id: str = "",
    sample_rate: int = 0,
    lead_ms: int | None = 0,
    session_id: str = "",
    limit_s: float = 60.0,
) -> Received:
    """One session, one final utterance; returns what came back once the stream ends."""
    requests = [
        open_request(
            session_id=session_id, model_id=model_id, sample_rate=sample_rate, lead_ms=lead_ms
        ),
        text_request(text),
    ]
    return await collect(stub.Synthesize(iter(requests), timeout=limit_s))


async def collect(call: Any) -> Received:
    """Read a Synthesize call to its end."""
    got = Received()
    async for response in call:
        kind = response.WhichOneof("kind")
        now = time.monotonic()
        if kind == "opened":
            got.opened = response.opened
        elif kind == "frame":
            got.frames.append(response.frame)
            got.frame_times.append(now)
        else:
            got.ends.append(response.utterance_end)
            got.end_times.append(now)
    return got


async def session_tasks() -> list[asyncio.Task[Any]]:
    """The worker's per-session tasks still alive in this loop."""
    await asyncio.sleep(0)
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("session-reader:")]


# -- subprocess workers ------------------------------------------------------------------


def write_worker_yaml(path: Path, config: WorkerConfig) -> Path:
    """Write `config` with the guide's keys (a fixed port must be chosen by the caller)."""
    mm = config.model_manager
    data = {
        "worker": {
            "name": config.worker.name,
            "grpc_port": config.worker.grpc_port,
            "adapter_type": config.worker.adapter_type,
            "host": config.worker.host,
            "advertise_host": config.worker.advertise_host,
            "inference_threads": config.worker.inference_threads,
            "onnx_threads": config.worker.onnx_threads,
            "output_lead_ms": config.worker.output_lead_ms,
            "drain_grace_s": config.worker.drain_grace_s,
            "use_cuda": config.worker.use_cuda,
            "metrics_port": config.worker.metrics_port,
            "metrics_host": config.worker.metrics_host,
        },
        "model_manager": {
            "default_model_id": mm.default_model_id,
            "preload_model_ids": list(mm.preload_model_ids),
            "resident_cap": mm.resident_cap,
            "ttl_ms": mm.ttl_ms,
            "min_residency_ms": mm.min_residency_ms,
        },
        "redis": {
            "url": config.redis.url,
            "heartbeat_interval_ms": config.redis.heartbeat_interval_ms,
            "worker_ttl_ms": config.redis.worker_ttl_ms,
        },
        "audio": {
            "sample_rate": config.audio.sample_rate,
            "frame_duration_ms": config.audio.frame_duration_ms,
        },
        "gpu": {"sample_interval_ms": config.gpu.sample_interval_ms},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def start_worker_process(
    config_path: Path, *, extra_args: Sequence[str] = (), env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`python -m duplex.worker --config PATH` with stderr captured (text)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "duplex.worker", "--config", str(config_path), *extra_args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_process(
    proc: subprocess.Popen[str], *, sig: int = signal.SIGTERM, wait_s: float = 15.0
) -> str:
    """Signal the process, wait for it, return its output."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    return out or ""


class LiveStream:
    """A Synthesize stream driven step by step, read by a background task.

    `frames`, `ends` and their arrival times grow as responses come; `wait_for` waits for
    a condition on them with a deadline.
    """

    def __init__(self, stub: Any) -> None:
        self.call = stub.Synthesize(timeout=120)
        self.got = Received()
        self.error: grpc.aio.AioRpcError | None = None
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def open(
        self,
        *,
        session_id: str = "",
        model_id: str = "",
        sample_rate: int = 0,
        lead_ms: int | None = None,
    ) -> Any:
        """Send SessionOpen and return the SessionOpened answer."""
        await self.call.write(
            open_request(
                session_id=session_id, model_id=model_id, sample_rate=sample_rate, lead_ms=lead_ms
            )
        )
        first = await asyncio.wait_for(self.call.read(), RPC_TIMEOUT_S)
        assert first.WhichOneof("kind") == "opened", first
        self.got.opened = first.opened
        self._reader = asyncio.create_task(self._read(), name="test-live-stream")
        return first.opened

    async def send(self, text: str, *, is_final: bool = True) -> None:
        await self.call.write(text_request(text, is_final=is_final))

    async def wait_for(self, predicate: Any, limit_s: float = 30.0) -> None:
        """Until `predicate(self.got)` is true (or the stream ended: then it must be true)."""
        async with asyncio.timeout(limit_s):
            while not predicate(self.got):
                if self._reader is not None and self._reader.done():
                    assert predicate(self.got), f"stream ended early (error={self.error})"
                self._changed.clear()
                await self._changed.wait()

    async def finish(self, limit_s: float = 30.0) -> Received:
        """Half-close and read to the end of the stream."""
        await self.call.done_writing()
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), limit_s)
        return self.got

    async def cancel(self) -> None:
        """The client goes away mid-stream."""
        self.call.cancel()
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), RPC_TIMEOUT_S)

    async def _read(self) -> None:
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    return
                now = time.monotonic()
                kind = response.WhichOneof("kind")
                if kind == "frame":
                    self.got.frames.append(response.frame)
                    self.got.frame_times.append(now)
                elif kind == "utterance_end":
                    self.got.ends.append(response.utterance_end)
                    self.got.end_times.append(now)
                self._changed.set()
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        except asyncio.CancelledError:
            if not self.call.cancelled():
                raise
        finally:
            self._changed.set()
