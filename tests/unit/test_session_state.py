"""The session state machine: every transition in the table, and what is ignored."""

from __future__ import annotations

import pytest
from duplex.orchestrator.session.state import (
    TRANSITIONS,
    SessionState,
    StateEvent,
    StateMachine,
)

S, E = SessionState, StateEvent


def run(*events: StateEvent) -> list[SessionState]:
    machine = StateMachine("sid")
    return [machine.fire(e) for e in events]


def test_a_session_starts_listening_speaks_and_listens_again() -> None:
    """STARTING -> LISTENING on start; audio owed -> SPEAKING; all sent -> LISTENING."""
    assert run(E.STARTED, E.AUDIO_OWED, E.AUDIO_DONE) == [S.LISTENING, S.SPEAKING, S.LISTENING]


def test_pause_and_resume() -> None:
    """PAUSE holds from SPEAKING or LISTENING; RESUME goes back to SPEAKING (then the session
    settles by what is owed); audio arriving while paused leaves it paused."""
    assert run(E.STARTED, E.AUDIO_OWED, E.PAUSE, E.AUDIO_OWED, E.RESUME, E.AUDIO_DONE) == [
        S.LISTENING, S.SPEAKING, S.PAUSED, S.PAUSED, S.SPEAKING, S.LISTENING,
    ]  # fmt: skip


def test_barge_in_then_resumed_or_stopped() -> None:
    """A barge-in while SPEAKING holds the output; a false one resumes to SPEAKING, a real
    one (STOP) ends in LISTENING."""
    assert run(E.STARTED, E.AUDIO_OWED, E.BARGE_IN, E.BARGE_IN_RESUMED) == [
        S.LISTENING, S.SPEAKING, S.BARGED_IN, S.SPEAKING,
    ]  # fmt: skip
    assert run(E.STARTED, E.AUDIO_OWED, E.BARGE_IN, E.STOP) == [
        S.LISTENING, S.SPEAKING, S.BARGED_IN, S.LISTENING,
    ]  # fmt: skip


def test_speech_while_listening_or_paused_is_no_barge_in() -> None:
    """BARGE_IN is not a transition from LISTENING or PAUSED: nothing is playing."""
    assert run(E.STARTED, E.BARGE_IN) == [S.LISTENING, S.LISTENING]
    assert run(E.STARTED, E.PAUSE, E.BARGE_IN) == [S.LISTENING, S.PAUSED, S.PAUSED]


def test_events_before_start_are_ignored_and_close_is_final() -> None:
    """Nothing moves a STARTING session but STARTED or CLOSE; nothing leaves CLOSED."""
    assert run(E.AUDIO_OWED, E.STOP, E.PAUSE) == [S.STARTING] * 3
    closed = run(E.STARTED, E.CLOSE, E.STARTED, E.AUDIO_OWED, E.RESUME)
    assert closed == [S.LISTENING] + [S.CLOSED] * 4


@pytest.mark.parametrize("state", list(SessionState))
def test_every_state_can_close(state: SessionState) -> None:
    """CLOSE is a transition from every state."""
    assert TRANSITIONS[(state, E.CLOSE)] is S.CLOSED


def test_stop_always_ends_in_listening_once_started() -> None:
    """STOP from any started, open state ends in LISTENING."""
    for state in (S.LISTENING, S.SPEAKING, S.PAUSED, S.BARGED_IN):
        assert TRANSITIONS[(state, E.STOP)] is S.LISTENING
