"""The hub forgets an ended session, and its sweep frees the session's cyclic objects."""

from __future__ import annotations

import asyncio
import gc
import weakref
from dataclasses import replace

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.config import OrchestratorConfig
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import ServerMessage, SessionEnd, SessionStart, TextChunk
from duplex.orchestrator.session import SessionHub, SessionServices
from duplex.orchestrator.session.sweeper import CycleSweeper
from duplex.orchestrator.transports.base import ClientChannel, TransportKind

from tests.unit.test_session import FakeClients, FakeRouter, FakeWorker


class Messages:
    async def send_message(self, message: ServerMessage) -> None:
        return None


class Audio:
    async def send(self, frame: PcmFrame) -> None:
        return None

    def clear(self) -> int:
        return 0


def hub(sweeper: CycleSweeper) -> SessionHub:
    workers = [FakeWorker("a")]
    services = SessionServices(
        replace(OrchestratorConfig()),
        FakeRouter(workers),  # type: ignore[arg-type]
        FakeClients(workers),  # type: ignore[arg-type]
        OrchestratorMetrics(),
    )
    return SessionHub(services, sweeper=sweeper)


async def test_ended_sessions_are_forgotten_and_swept_without_waiting_for_the_collector() -> None:
    sweeper = CycleSweeper(every=3, min_interval_s=0.0)
    sessions = hub(sweeper)
    refs, ids = [], []
    for _ in range(3):
        channel = ClientChannel(TransportKind.WEBSOCKET, Audio(), Messages())  # type: ignore[arg-type]
        conn = sessions.open(channel)
        await conn.receive(SessionStart(model_id="tone-fast"))
        await conn.receive(TextChunk("Hello there.", is_final=True))
        assert conn.session_id is not None and sessions.find(conn.session_id) is conn
        ids.append(conn.session_id)
        refs.append(weakref.ref(conn.session))
        await conn.receive(SessionEnd())
        async with asyncio.timeout(5):
            await conn.wait_ended()
        del conn, channel
    gc.disable()  # only the sweep may free them
    try:
        assert sessions.active == 0
        assert all(sessions.find(i) is None for i in ids)
        assert sweeper.sweeps == 1
        # The third ending ran the sweep from within itself, so it still held its session.
        assert [r() is None for r in refs] == [True, True, False]
    finally:
        gc.enable()
