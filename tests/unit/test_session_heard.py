"""What the listener heard at a cut: whole clauses, and an estimate snapped to a word."""

from __future__ import annotations

from duplex.audio.frames import PcmFrame, TextSpan
from duplex.orchestrator.protocol import HeardPrecision
from duplex.orchestrator.session.heard import HeardTracker

TEXT = "Hello there, my friend. How are you today?"
FIRST = (0, 12)  # "Hello there,"
SECOND = (12, 23)  # " my friend."


def frame(start: int, end: int, last: bool) -> PcmFrame:
    return PcmFrame(b"\0\0" * 960, 48000, TextSpan(0, start, end, last))


def feed(tracker: HeardTracker, clause: tuple[int, int], frames: int, sent: int) -> None:
    for i in range(frames):
        tracker.arrived(frame(*clause, i == frames - 1).span)  # type: ignore[arg-type]
    for i in range(sent):
        tracker.sent(frame(*clause, i == frames - 1))


def test_a_clause_heard_to_its_last_frame_counts_whole() -> None:
    """The last frame of a clause was sent: heard up to the clause end, precision clause."""
    tracker = HeardTracker()
    feed(tracker, FIRST, 10, 10)
    heard = tracker.heard({0: TEXT}, 0)
    assert heard is not None
    assert (heard.chars, heard.text, heard.precision) == (12, "Hello there,", HeardPrecision.CLAUSE)
    assert heard.at_ms == 200


def test_mid_clause_is_estimated_and_snapped_back_to_a_whole_word() -> None:
    """Half of the second clause's frames sent: the estimate stops at a word end."""
    tracker = HeardTracker()
    feed(tracker, FIRST, 10, 10)
    feed(tracker, SECOND, 10, 6)  # 60% of " my friend." -> position ~18, inside "friend"
    heard = tracker.heard({0: TEXT}, 0)
    assert heard is not None and heard.precision is HeardPrecision.ESTIMATE
    assert heard.text == "Hello there, my"
    assert heard.at_ms == 16 * 20


def test_frames_the_transport_dropped_were_not_heard() -> None:
    """unsend(n) takes the last n frames back: the clause end was never heard."""
    tracker = HeardTracker()
    feed(tracker, FIRST, 10, 10)
    tracker.unsend(3)
    heard = tracker.heard({0: TEXT}, 0)
    assert heard is not None and heard.precision is HeardPrecision.ESTIMATE
    assert heard.text == "Hello"
    assert heard.at_ms == 7 * 20


def test_before_a_clause_end_arrives_its_length_is_estimated_from_its_text() -> None:
    """With the clause's last frame not yet arrived, its frame count is estimated from its
    characters (never below what has arrived), so an early cut is not over-estimated."""
    tracker = HeardTracker()
    clause = (0, 23)
    for _ in range(3):
        tracker.arrived(TextSpan(0, *clause, False))
        tracker.sent(PcmFrame(b"\0\0" * 960, 48000, TextSpan(0, *clause, False)))
    heard = tracker.heard({0: TEXT}, 0)
    assert heard is not None and heard.chars <= 5  # 3 of ~77 frames: at most "Hello"


def test_nothing_sent_yet_means_nothing_heard_of_the_current_utterance() -> None:
    """A cut before the first frame: heard 0 characters of the utterance now playing."""
    heard = HeardTracker().heard({4: "Later."}, 4)
    assert heard is not None and (heard.utterance, heard.chars, heard.text) == (4, 0, "")
