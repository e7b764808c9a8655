"""The product as separate processes for the fault tests: a tone worker and the orchestrator
(`python -m duplex.worker`, `python -m duplex.orchestrator`), started with the bench's helpers,
so a stall measured in the orchestrator is its own and not the test client's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.procs import (
    OrchestratorProcess,
    WorkerProcess,
    WorkerSpec,
    start_orchestrator,
    start_worker,
)


@dataclass
class Stack:
    workers: list[WorkerProcess]
    orchestrator: OrchestratorProcess

    @property
    def url(self) -> str:
        return self.orchestrator.ws_url


def tone_worker(name: str) -> WorkerSpec:
    return WorkerSpec(name, "tone", "tone-fast")


@asynccontextmanager
async def running_stack(
    redis_url: str, workdir: Path, *, workers: tuple[str, ...] = ("w1",), max_connections: int = 400
) -> AsyncIterator[Stack]:
    """Tone workers and an orchestrator that is ready (Redis and a worker seen)."""
    started: list[WorkerProcess] = []
    orch: OrchestratorProcess | None = None
    try:
        for name in workers:
            started.append(await start_worker(tone_worker(name), redis_url, workdir))
        orch = await start_orchestrator(redis_url, workdir, max_connections=max_connections)
        yield Stack(started, orch)
    finally:
        if orch is not None:
            orch.managed.stop()
        for worker in started:
            worker.managed.stop()
