"""The standard grpc.health.v1 service for the worker.

SERVING (for "" and "tts.v1.TTSWorker") only while the default model is loaded and the
worker is not draining; NOT_SERVING otherwise.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

SERVICE_NAME = "tts.v1.TTSWorker"
_SERVICES = ("", SERVICE_NAME)


class WorkerHealth:
    """Owns the aio HealthServicer and derives its status from the worker's state."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self._serving: bool | None = None

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    async def update(self, *, default_loaded: bool, draining: bool) -> None:
        """Publish SERVING or NOT_SERVING; watchers are told only on a change."""
        serving = default_loaded and not draining
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in _SERVICES:
            await self.servicer.set(service, status)

    async def shutdown(self) -> None:
        """NOT_SERVING for good: later updates are ignored."""
        self._serving = False
        await self.servicer.enter_graceful_shutdown()
