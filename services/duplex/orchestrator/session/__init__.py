"""The session layer: one transport-neutral session per client connection.

`SessionHub` opens a `ClientConnection` for each transport connection; the connection runs
a `Session` (routing, utterances, pacing, interruption, failover) and its `Listener` (mic
audio, VAD, barge-in, transcripts).
"""

from duplex.orchestrator.session.connection import ClientConnection
from duplex.orchestrator.session.core import Session, SessionError
from duplex.orchestrator.session.hub import SessionHub
from duplex.orchestrator.session.output import Cut
from duplex.orchestrator.session.services import SessionServices
from duplex.orchestrator.session.state import SessionState, StateEvent

__all__ = [
    "ClientConnection",
    "Cut",
    "Session",
    "SessionError",
    "SessionHub",
    "SessionServices",
    "SessionState",
    "StateEvent",
]
