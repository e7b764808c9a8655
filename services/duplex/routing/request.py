"""What a session asks of routing, what routing answers, and why it can fail."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from duplex.registry.records import WorkerRecord


@dataclass(frozen=True)
class SessionRequest:
    """The routing-relevant part of a client's SessionStart."""

    model_id: str | None  # None: the worker's default model
    language: str
    capabilities: tuple[str, ...] = ()

    def describe(self) -> str:
        """The request in words, for error messages ("language='en', model 'x', ...")."""
        parts = [f"language={self.language!r}"]
        if self.model_id is not None:
            parts.append(f"model {self.model_id!r}")
        if self.capabilities:
            parts.append(f"capabilities {', '.join(self.capabilities)}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Decision:
    """The worker chosen for a session, and whether it must load the model first."""

    worker: WorkerRecord
    model_id: str | None  # None: the worker's default model
    needs_load: bool


class NoWorkerCause(StrEnum):
    """Which filter left no candidate (the first one that did, in filter order)."""

    NO_WORKERS = "no_workers"
    LANGUAGE = "language"
    STREAMING = "streaming"
    CAPABILITY = "capability"
    MODEL = "model"
    DRAINED = "drained"


class NoWorkerAvailable(Exception):
    """No live worker fits the request; ``reason`` says what was asked and why."""

    def __init__(self, reason: str, cause: NoWorkerCause) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause
