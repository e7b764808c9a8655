"""A session's state machine: one table of the transitions, nothing else.

States and what moves between them:

- STARTING -> LISTENING once the session is routed and its worker stream is open;
- LISTENING <-> SPEAKING as audio is owed to the client or has all been sent;
- SPEAKING/LISTENING -> PAUSED on PAUSE, back on RESUME;
- SPEAKING -> BARGED_IN when the user speaks over the system: output stops at once, and
  BARGED_IN -> SPEAKING when a false interruption resumes the utterance, or
  BARGED_IN -> LISTENING when the interruption is real (the rest is dropped);
- any state -> LISTENING on STOP (every pending utterance ends), any state -> CLOSED.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType

log = logging.getLogger(__name__)


class SessionState(Enum):
    STARTING = "starting"
    LISTENING = "listening"  # nothing to say
    SPEAKING = "speaking"
    PAUSED = "paused"
    BARGED_IN = "barged_in"  # the user spoke over the system; output held or dropped
    CLOSED = "closed"


class StateEvent(Enum):
    STARTED = "started"
    AUDIO_OWED = "audio_owed"  # an utterance has audio for the client
    AUDIO_DONE = "audio_done"  # everything owed has been sent
    PAUSE = "pause"
    RESUME = "resume"
    BARGE_IN = "barge_in"
    BARGE_IN_RESUMED = "barge_in_resumed"  # a false interruption: the utterance goes on
    STOP = "stop"  # Control STOP, or a real barge-in
    CLOSE = "close"


_S = SessionState
_E = StateEvent

TRANSITIONS: Mapping[tuple[SessionState, StateEvent], SessionState] = MappingProxyType(
    {
        (_S.STARTING, _E.STARTED): _S.LISTENING,
        (_S.LISTENING, _E.AUDIO_OWED): _S.SPEAKING,
        (_S.SPEAKING, _E.AUDIO_DONE): _S.LISTENING,
        (_S.LISTENING, _E.PAUSE): _S.PAUSED,
        (_S.SPEAKING, _E.PAUSE): _S.PAUSED,
        (_S.BARGED_IN, _E.PAUSE): _S.PAUSED,
        (_S.PAUSED, _E.RESUME): _S.SPEAKING,
        (_S.SPEAKING, _E.BARGE_IN): _S.BARGED_IN,
        (_S.BARGED_IN, _E.BARGE_IN_RESUMED): _S.SPEAKING,
        (_S.LISTENING, _E.STOP): _S.LISTENING,
        (_S.SPEAKING, _E.STOP): _S.LISTENING,
        (_S.PAUSED, _E.STOP): _S.LISTENING,
        (_S.BARGED_IN, _E.STOP): _S.LISTENING,
        **{(state, _E.CLOSE): _S.CLOSED for state in SessionState},
    }
)


class StateMachine:
    """The current state; `fire` applies an event (an event with no transition is ignored:
    e.g. audio arriving while PAUSED leaves it PAUSED)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._state = SessionState.STARTING

    @property
    def state(self) -> SessionState:
        return self._state

    def fire(self, event: StateEvent) -> SessionState:
        new = TRANSITIONS.get((self._state, event))
        if new is not None and new is not self._state:
            log.debug(
                "session state",
                extra={"session_id": self._name, "from": self._state.value, "to": new.value,
                       "event": event.value},
            )  # fmt: skip
            self._state = new
        return self._state
