"""Which words of an utterance the listener heard, at the moment output was cut.

Frames carry the bounds of the clause they voice (client positions). A frame that ends a
clause proves the clause was heard to its end (precision ``clause``). Within a clause the
position is estimated by spreading the clause's audio over its characters: frames heard
of the clause out of the clause's frames (known once its last frame has arrived; until
then estimated from its length at a typical speaking rate), snapped back to the last
whole word (precision ``estimate``). No adapter here emits phoneme alignments, so
``alignment`` is never claimed.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

from duplex.audio.frames import FRAME_MS, PcmFrame, TextSpan
from duplex.orchestrator.protocol import HeardPrecision

# About 15 characters a second: English speech, used only before a clause's end arrived.
CHARS_PER_FRAME = 0.3
_KEEP_SENT = 64  # more than any transport buffers


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

    def arrived(self, span: TextSpan) -> None:
        clause = self._clauses.setdefault((span.utterance, span.start), _Clause(span.end))
        clause.arrived += 1
        clause.complete = clause.complete or span.clause_end

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
                total = max(total, math.ceil((span.end - span.start) / CHARS_PER_FRAME))
            share = (k + 1) / max(total, k + 1)
            chars = _word_end(text, span.start, span.start + share * (span.end - span.start))
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
