"""The one gRPC client of the worker API (`tts.v1.TTSWorker`) and its error translation, used
by the orchestrator (sessions) and the console (load, unload, "speak on this worker")."""

from duplex.workerclient.client import (
    DEFAULT_TIMEOUT_S,
    LoadResult,
    StreamOpened,
    UnknownModelError,
    UnknownSessionError,
    WorkerCapacityError,
    WorkerClient,
    WorkerClients,
    WorkerCommand,
    WorkerError,
    WorkerEvent,
    WorkerInfo,
    WorkerModel,
    WorkerModels,
    WorkerStream,
    WorkerStreamError,
    WorkerUnavailable,
    WorkerUtteranceEnd,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "LoadResult",
    "StreamOpened",
    "UnknownModelError",
    "UnknownSessionError",
    "WorkerCapacityError",
    "WorkerClient",
    "WorkerClients",
    "WorkerCommand",
    "WorkerError",
    "WorkerEvent",
    "WorkerInfo",
    "WorkerModel",
    "WorkerModels",
    "WorkerStream",
    "WorkerStreamError",
    "WorkerUnavailable",
    "WorkerUtteranceEnd",
]
