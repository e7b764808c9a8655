"""What a synthesis session takes and gives: its settings, events, state and errors.

The servicer maps these to and from the wire (tts.proto); :mod:`.session` produces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SessionState(StrEnum):
    """What a Control answer reports."""

    SPEAKING = "speaking"
    PAUSED = "paused"
    IDLE = "idle"


class InvalidText(ValueError):
    """A text chunk the session refuses (empty, or the utterance grows too long)."""


class SynthesisFailed(RuntimeError):
    """The engine failed on a clause; the session cannot go on."""


@dataclass(frozen=True)
class SessionSettings:
    """Output format and limits of one session."""

    sample_rate: int
    frame_ms: int = 20
    lead_ms: int = 100  # 0: as fast as produced
    max_text_chars: int = 2000
    min_clause_chars: int = 12
    max_clause_chars: int = 220
    first_clause_max_chars: int = 0  # 0: the first clause follows max_clause_chars
    # Clause jobs of this session on the scheduler at once. 2 speeds up one fast client, but
    # a running look-ahead job cannot be preempted, which delays other sessions' first audio.
    max_jobs_in_flight: int = 1
    # Frames released together by the playback clock (see playback.py): a worker that sends
    # N frames per message sets N, so the session wakes once per message, not per frame.
    release_frames: int = 1

    def __post_init__(self) -> None:
        if self.max_jobs_in_flight < 1:
            raise ValueError(f"max_jobs_in_flight must be >= 1, got {self.max_jobs_in_flight}")
        if self.release_frames < 1:
            raise ValueError(f"release_frames must be >= 1, got {self.release_frames}")


@dataclass(frozen=True)
class FrameEvent:
    """One frame of the session's audio; every frame voices exactly one clause."""

    pcm: bytes
    sample_rate: int
    sequence: int
    utterance: int
    text_start: int
    text_end: int
    clause_end: bool


@dataclass(frozen=True)
class UtteranceEndEvent:
    """Sent after an utterance's last frame, or at once when STOP ends it."""

    utterance: int
    text_length: int
    voiced_length: int
    stopped: bool
    frames: int


SessionEvent = FrameEvent | UtteranceEndEvent
