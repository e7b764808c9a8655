"""Which words of an utterance the listener heard, at the moment output was cut.

Frames carry the bounds of the clause they voice (client positions). A frame that ends a
clause proves the clause was heard to its end (precision ``clause``). Within a clause the
position is estimated by spreading the clause's audio over its characters: frames heard
of the clause out of the clause's frames (known once its last frame has arrived; until
then estimated from its length at the voice's speaking rate, `SpeechRate`), snapped back
to the last whole word (precision ``estimate``). No adapter here emits phoneme
alignments, so ``alignment`` is never claimed. Failover uses the same estimate
(`word_end_at`) to resume a clause cut mid-way from its last word fully received.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

from duplex.audio.frames import FRAME_MS, PcmFrame, TextSpan
from duplex.orchestrator.protocol import HeardPrecision

# About 15 characters a second: English speech, used until a whole clause has been voiced.
CHARS_PER_FRAME = 0.3
_KEEP_SENT = 64  # more than any transport buffers
_RATE_MIN_CHARS = 8  # a clause shorter than this says little about the speaking rate


class SpeechRate:
    """Characters per 20 ms frame of the voice at hand, learned from the whole clauses it
    voiced (the fixed English rate until one arrived): voices and languages differ by
    half or more, and an estimate within a clause is only as good as this rate."""

    def __init__(self, default: float = CHARS_PER_FRAME) -> None:
        self._default = default
        self._chars = 0
        self._frames = 0

    def clause_voiced(self, chars: int, frames: int) -> None:
        if chars >= _RATE_MIN_CHARS and frames > 0:
            self._chars += chars
            self._frames += frames

    @property
    def chars_per_frame(self) -> float:
        return self._chars / self._frames if self._frames else self._default

    def frames_for(self, chars: int) -> int:
        """Frames a clause of ``chars`` characters is expected to take."""
        return max(1, math.ceil(chars / self.chars_per_frame))


# High bytes of s16le samples with |x| < 512 (about -36 dBFS): quiet.
_QUIET_HIGH_BYTES = bytes((0x00, 0x01, 0xFE, 0xFF))


def is_speech(pcm: bytes) -> bool:
    """Whether a frame holds sound above -36 dBFS, from every 16th sample's high byte (a C
    loop: this runs on every frame of every session, so no numpy and no per-sample work)."""
    return bool(pcm[1::32].translate(None, _QUIET_HIGH_BYTES))


def word_end_at(text: str, start: int, end: int, frames: int, total: int) -> int:
    """The end of the last whole word within ``frames`` of the ``total`` frames of the clause
    ``text[start:end]`` (the clause's audio spread evenly over its characters)."""
    share = min(1.0, frames / max(total, 1))
    return _word_end(text, start, start + share * (end - start))


@dataclass
class _Clause:
    end: int
    arrived: int = 0
    complete: bool = False


@dataclass(frozen=True)
class Heard:
    """What was heard of utterance ``utterance`` when the output stopped."""

    utterance: int
    at_ms: int  # audio time of the cut within the utterance
    chars: int
    text: str
    precision: HeardPrecision


class HeardTracker:
    """Follows frames as they arrive (from the worker) and as they are sent (to the client)."""

    def __init__(self) -> None:
        self._clauses: dict[tuple[int, int], _Clause] = {}
        self._sent: collections.deque[tuple[TextSpan, int]] = collections.deque(maxlen=_KEEP_SENT)
        self._sent_in_clause: dict[tuple[int, int], int] = {}
        self._utterance_frames: dict[int, int] = {}
        self.rate = SpeechRate()

    def arrived(self, span: TextSpan) -> None:
        clause = self._clauses.setdefault((span.utterance, span.start), _Clause(span.end))
        clause.arrived += 1
        if span.clause_end and not clause.complete:
            clause.complete = True
            self.rate.clause_voiced(span.end - span.start, clause.arrived)

    def sent(self, frame: PcmFrame) -> None:
        span = frame.span
        if span is None:
            return
        key = (span.utterance, span.start)
        k = self._sent_in_clause.get(key, 0)
        self._sent_in_clause[key] = k + 1
        self._utterance_frames[span.utterance] = self._utterance_frames.get(span.utterance, 0) + 1
        self._sent.append((span, k))

    def unsend(self, count: int) -> None:
        """The last ``count`` frames sent never reached the listener (a transport dropped them)."""
        for _ in range(min(count, len(self._sent))):
            span, _k = self._sent.pop()
            key = (span.utterance, span.start)
            self._sent_in_clause[key] -= 1
            self._utterance_frames[span.utterance] -= 1

    def heard(self, texts: dict[int, str], current: int | None) -> Heard | None:
        """What was heard of the utterance playing last (or of ``current`` when none of its
        audio has been sent yet); ``texts`` maps utterance numbers to their client text."""
        if self._sent:
            span, k = self._sent[-1]
            if current is None or span.utterance >= current or current not in texts:
                return self._within(span, k, texts.get(span.utterance, ""))
        if current is None:
            return None
        return Heard(current, 0, 0, "", HeardPrecision.CLAUSE)

    def forget_before(self, utterance: int) -> None:
        """Drop the bookkeeping of utterances before ``utterance`` (they have ended)."""
        for key in [k for k in self._clauses if k[0] < utterance]:
            del self._clauses[key]
        for key in [k for k in self._sent_in_clause if k[0] < utterance]:
            del self._sent_in_clause[key]
        for index in [i for i in self._utterance_frames if i < utterance]:
            del self._utterance_frames[index]

    def _within(self, span: TextSpan, k: int, text: str) -> Heard:
        at_ms = self._utterance_frames.get(span.utterance, 0) * FRAME_MS
        if span.clause_end:
            chars = span.end
            precision = HeardPrecision.CLAUSE
        else:
            clause = self._clauses.get((span.utterance, span.start), _Clause(span.end))
            total = clause.arrived
            if not clause.complete:
                total = max(total, self.rate.frames_for(span.end - span.start))
            chars = word_end_at(text, span.start, span.end, k + 1, max(total, k + 1))
            precision = HeardPrecision.ESTIMATE
        return Heard(span.utterance, at_ms, chars, text[:chars], precision)


def _word_end(text: str, start: int, position: float) -> int:
    """The end of the last whole word at or before ``position`` (not before ``start``)."""
    limit = min(len(text), int(position))
    if limit < len(text) and limit > start and not text[limit].isspace():
        # Mid-word: back off to the space before it.
        while limit > start and not text[limit - 1].isspace():
            limit -= 1
    while limit > start and text[limit - 1].isspace():
        limit -= 1
    return max(start, limit)
