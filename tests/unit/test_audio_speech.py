"""SpeechTracker: every state transition, with audio times given by the test."""

from __future__ import annotations

import dataclasses

import pytest
from duplex.audio.speech import (
    SpeechEnded,
    SpeechEvent,
    SpeechStarted,
    SpeechState,
    SpeechTracker,
)

WINDOW_MS = 20.0


def _feed(
    tracker: SpeechTracker, pattern: str, *, start_ms: float = 0.0, window_ms: float = WINDOW_MS
) -> list[SpeechEvent]:
    """Feed one window per character: 'S' speech, '.' silence; windows are back to back."""
    events: list[SpeechEvent] = []
    for i, mark in enumerate(pattern):
        events += tracker.update(mark == "S", start_ms + i * window_ms, window_ms)
    return events


def _state(tracker: SpeechTracker) -> SpeechState:
    # A call, not the property, so a type checker does not narrow the state between feeds.
    return tracker.state


def test_silence_stays_silent() -> None:
    """SILENT + silence: no event, still SILENT."""
    tracker = SpeechTracker(100, 200)
    assert _feed(tracker, "." * 50) == []
    assert _state(tracker) is SpeechState.SILENT
    assert tracker.onset_ms is None


def test_first_speech_window_is_only_maybe_speech() -> None:
    """SILENT + speech shorter than min_speech: MAYBE_SPEECH, onset remembered, no event."""
    tracker = SpeechTracker(100, 200)
    assert _feed(tracker, "..S") == []
    assert _state(tracker) is SpeechState.MAYBE_SPEECH
    assert tracker.onset_ms == 40.0
    assert not tracker.speaking


def test_speech_that_lasts_min_speech_starts_at_its_onset() -> None:
    """MAYBE_SPEECH + speech reaching min_speech: SpeechStarted(onset, decided), SPEAKING."""
    tracker = SpeechTracker(100, 200)
    assert _feed(tracker, "..SSSS") == []
    assert _state(tracker) is SpeechState.MAYBE_SPEECH
    events = _feed(tracker, "S", start_ms=120.0)
    assert events == [SpeechStarted(onset_ms=40.0, decided_ms=140.0)]
    assert _state(tracker) is SpeechState.SPEAKING
    assert tracker.speaking


def test_a_window_as_long_as_min_speech_starts_at_once() -> None:
    """SILENT + one speech window >= min_speech: SpeechStarted from that window alone."""
    tracker = SpeechTracker(32, 100)
    assert tracker.update(True, 64.0, 32.0) == [SpeechStarted(onset_ms=64.0, decided_ms=96.0)]
    assert _state(tracker) is SpeechState.SPEAKING


def test_speech_shorter_than_min_speech_gives_no_event() -> None:
    """MAYBE_SPEECH + silence: back to SILENT, and no event at any later point of silence."""
    tracker = SpeechTracker(100, 200)
    assert _feed(tracker, "SSSS" + "." * 30) == []
    assert _state(tracker) is SpeechState.SILENT


def test_blips_inside_silence_never_start_speech() -> None:
    """Repeated short speech blips, each below min_speech, never add up to a start."""
    tracker = SpeechTracker(100, 200)
    assert _feed(tracker, "SS.SSS.SSSS.S.SSSS." * 5) == []
    assert _state(tracker) is SpeechState.SILENT


def test_speech_goes_on_while_speaking() -> None:
    """SPEAKING + speech: no event, still SPEAKING."""
    tracker = SpeechTracker(40, 200)
    assert len(_feed(tracker, "SS")) == 1
    assert _feed(tracker, "S" * 100, start_ms=40.0) == []
    assert _state(tracker) is SpeechState.SPEAKING


def test_first_silence_while_speaking_is_only_maybe_silence() -> None:
    """SPEAKING + silence shorter than min_silence: MAYBE_SILENCE, still speaking, no event."""
    tracker = SpeechTracker(40, 200)
    _feed(tracker, "SSS")
    assert _feed(tracker, "...", start_ms=60.0) == []
    assert _state(tracker) is SpeechState.MAYBE_SILENCE
    assert tracker.speaking


def test_short_gap_inside_speech_does_not_end_it() -> None:
    """MAYBE_SILENCE + speech: back to SPEAKING with the original onset kept."""
    tracker = SpeechTracker(40, 200)
    _feed(tracker, "..SSS")
    assert _feed(tracker, "." * 9 + "S", start_ms=100.0) == []
    assert _state(tracker) is SpeechState.SPEAKING
    assert tracker.onset_ms == 40.0


def test_silence_that_lasts_min_silence_ends_speech_where_silence_began() -> None:
    """MAYBE_SILENCE + silence reaching min_silence: SpeechEnded(onset, end=silence start)."""
    tracker = SpeechTracker(40, 200)
    events = _feed(tracker, "..SSSSS" + "." * 9)
    assert events == [SpeechStarted(onset_ms=40.0, decided_ms=80.0)]
    assert _state(tracker) is SpeechState.MAYBE_SILENCE
    events = _feed(tracker, ".", start_ms=320.0)
    assert events == [SpeechEnded(onset_ms=40.0, end_ms=140.0)]
    assert _state(tracker) is SpeechState.SILENT
    assert not tracker.speaking


def test_a_window_as_long_as_min_silence_ends_at_once() -> None:
    """SPEAKING + one silence window >= min_silence: SpeechEnded from that window alone."""
    tracker = SpeechTracker(0, 32)
    assert tracker.update(True, 0.0, 32.0) == [SpeechStarted(onset_ms=0.0, decided_ms=32.0)]
    assert tracker.update(False, 32.0, 32.0) == [SpeechEnded(onset_ms=0.0, end_ms=32.0)]


def test_gap_then_real_end_reports_the_last_silence() -> None:
    """After a short gap, the end is where the final, long silence began."""
    tracker = SpeechTracker(40, 100)
    events = _feed(tracker, "SSSS...SSSS" + "." * 5)
    assert events == [
        SpeechStarted(onset_ms=0.0, decided_ms=40.0),
        SpeechEnded(onset_ms=0.0, end_ms=220.0),
    ]


def test_two_utterances_give_two_pairs_of_events() -> None:
    """After SpeechEnded the tracker starts over: a second run gives its own onset."""
    tracker = SpeechTracker(40, 60)
    events = _feed(tracker, "SSS...." + "SSS...")
    assert events == [
        SpeechStarted(onset_ms=0.0, decided_ms=40.0),
        SpeechEnded(onset_ms=0.0, end_ms=60.0),
        SpeechStarted(onset_ms=140.0, decided_ms=180.0),
        SpeechEnded(onset_ms=140.0, end_ms=200.0),
    ]


def test_times_made_of_thirds_still_reach_the_thresholds() -> None:
    """Window lengths such as 10.666.. ms (512 samples of 48 kHz input) add up exactly enough."""
    tracker = SpeechTracker(32, 32)
    window = 512 / 48
    events = _feed(tracker, "SSS...", window_ms=window)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    started = events[0]
    assert isinstance(started, SpeechStarted)
    assert started.onset_ms == 0.0
    assert abs(started.decided_ms - 32.0) < 1e-9


def test_reset_forgets_speech_in_progress() -> None:
    """reset() goes back to SILENT with no event; the next run needs min_speech again."""
    tracker = SpeechTracker(60, 100)
    _feed(tracker, "SSSS")
    assert tracker.speaking
    tracker.reset()
    assert _state(tracker) is SpeechState.SILENT
    assert _feed(tracker, "SS", start_ms=80.0) == []
    assert _state(tracker) is SpeechState.MAYBE_SPEECH


def test_events_are_frozen() -> None:
    """Events are immutable values."""
    event = SpeechStarted(onset_ms=1.0, decided_ms=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.onset_ms = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(("min_speech", "min_silence"), [(-1, 100), (100, -5)])
def test_negative_minimums_are_rejected(min_speech: float, min_silence: float) -> None:
    """Negative durations are a configuration error."""
    with pytest.raises(ValueError, match="must not be negative"):
        SpeechTracker(min_speech, min_silence)


def test_negative_window_is_rejected() -> None:
    """A window with a negative duration is a caller bug and raises."""
    with pytest.raises(ValueError, match="duration_ms"):
        SpeechTracker(10, 10).update(True, 0.0, -20.0)
