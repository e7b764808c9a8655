"""Every client connection of the process, whatever its transport.

`max_connections` counts them all; the agent's channel finds a live session by its id; a
shutdown ends them all with `SessionEnded {reason}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from duplex.audio.vad import SileroModel
from duplex.orchestrator.errors import DuplexError
from duplex.orchestrator.protocol import ErrorCode
from duplex.orchestrator.session.bargein import Transcriber
from duplex.orchestrator.session.connection import ClientConnection
from duplex.orchestrator.session.services import SessionServices
from duplex.orchestrator.session.sweeper import CycleSweeper
from duplex.orchestrator.transports.base import ClientChannel
from duplex.registry.orchestrators import SessionSummary

log = logging.getLogger(__name__)

_END_TIMEOUT_S = 5.0


class SessionHub:
    """Opens client connections up to `max_connections`, and finds them by session id."""

    def __init__(
        self,
        services: SessionServices,
        *,
        transcriber: Transcriber | None = None,
        sweeper: CycleSweeper | None = None,
    ) -> None:
        self._services = services
        self._sweeper = sweeper or CycleSweeper()
        self._transcriber = transcriber
        self._max = services.config.transport.websocket.max_connections
        self._connections: set[ClientConnection] = set()
        self._by_session: dict[str, ClientConnection] = {}
        self._closing = False
        # One silero model for the process (each session's detector keeps its own state).
        self._silero = SileroModel() if services.config.vad.engine == "silero" else None

    @property
    def services(self) -> SessionServices:
        return self._services

    @property
    def active(self) -> int:
        return len(self._connections)

    @property
    def closing(self) -> bool:
        return self._closing

    def open(self, channel: ClientChannel) -> ClientConnection:
        """A new connection; DuplexError CAPACITY beyond max_connections or while shutting down."""
        if self._closing:
            raise DuplexError(ErrorCode.CAPACITY, "the orchestrator is shutting down")
        if len(self._connections) >= self._max:
            self._services.metrics.ws_connections_rejected_total.inc()
            metrics = self._services.metrics
            metrics.protocol_errors_total.labels(code=ErrorCode.CAPACITY.value).inc()
            log.warning(
                "connection refused: max_connections reached",
                extra={"max_connections": self._max, "transport": channel.kind.value},
            )
            raise DuplexError(
                ErrorCode.CAPACITY,
                f"the orchestrator is at max_connections ({self._max}); try again later",
            )
        connection = ClientConnection(
            channel,
            self._services,
            on_started=self._started,
            on_ended=self._ended,
            transcriber=self._transcriber,
            silero_model=self._silero,
        )
        self._connections.add(connection)
        return connection

    def summaries(self) -> list[SessionSummary]:
        """Every started session, oldest first."""
        found = (c.summary() for c in list(self._connections))
        return sorted((s for s in found if s is not None), key=lambda s: s.started_at)

    def find(self, session_id: str) -> ClientConnection | None:
        return self._by_session.get(session_id)

    async def close_all(self, reason: str = "shutdown") -> None:
        """Refuse new connections and end every live one with `SessionEnded {reason}`."""
        self._closing = True
        connections = list(self._connections)
        if connections:
            log.info("closing live connections", extra={"count": len(connections)})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_END_TIMEOUT_S):
                    await asyncio.gather(
                        *(c.end(reason) for c in connections), return_exceptions=True
                    )

    def _started(self, connection: ClientConnection) -> None:
        if connection.session_id is not None:
            self._by_session[connection.session_id] = connection

    def _ended(self, connection: ClientConnection) -> None:
        self._connections.discard(connection)
        if connection.session_id is not None:
            self._by_session.pop(connection.session_id, None)
        self._sweeper.session_ended(len(self._connections))
