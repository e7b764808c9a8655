"""A session's text bookkeeping: utterances, their clauses in text order, which are open.

Text chunks join the current utterance (a new one when none takes text) and are cut into
clauses as they arrive; each clause, then an end marker once the utterance is final, joins
one work queue that the session drains in order. An utterance stays open from its first
chunk until its UtteranceEnd is sent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from duplex.text import Clause, ClauseSegmenter
from duplex.worker.session_messages import InvalidText


@dataclass(eq=False)
class Utterance:
    """One utterance's text and how much of it has been synthesized and sent."""

    index: int
    segmenter: ClauseSegmenter
    text_length: int = 0
    submitted: int = 0  # clause jobs submitted
    frames_sent: int = 0
    voiced: int = 0  # end of the last clause whose final frame was sent
    started_at: float = 0.0  # time.monotonic() of its first text


Work = tuple[Utterance, Clause | None]
"""A clause to synthesize, or (None) the end of its utterance."""


class Utterances:
    """The utterances of one session (event loop only)."""

    def __init__(self, max_text_chars: int, segmenter: Callable[[], ClauseSegmenter]) -> None:
        self._max_text_chars = max_text_chars
        self._segmenter = segmenter
        self._next_index = 0
        self.current: Utterance | None = None  # the utterance that takes new text
        self.open: deque[Utterance] = deque()  # started, UtteranceEnd not yet sent
        self.work: deque[Work] = deque()  # in text order

    def push(self, text: str, is_final: bool) -> None:
        """Add text to the current utterance (a new one if none takes text)."""
        utt = self.current
        if not text:
            if not is_final:
                raise InvalidText("empty text chunk (only a final chunk may be empty)")
            if utt is None:
                raise InvalidText("empty utterance: a final chunk without any text")
        limit = self._max_text_chars
        if (utt.text_length if utt else 0) + len(text) > limit:
            raise InvalidText(f"utterance text over the limit of {limit} characters")
        if utt is None:
            utt = self._start()
        utt.text_length += len(text)
        clauses = utt.segmenter.push(text) if text else []
        if is_final:
            clauses += utt.segmenter.finish()
        self.work.extend((utt, c) for c in clauses if c.text.strip())
        if is_final:
            self.work.append((utt, None))
            self.current = None

    def ended(self, utt: Utterance) -> None:
        """`utt`'s UtteranceEnd was sent."""
        if self.open and self.open[0] is utt:
            self.open.popleft()

    def stop_text(self) -> None:
        """Text that comes next starts a new utterance (STOP ended the current one)."""
        self.current = None

    def _start(self) -> Utterance:
        utt = Utterance(
            index=self._next_index, segmenter=self._segmenter(), started_at=time.monotonic()
        )
        self._next_index += 1
        self.current = utt
        self.open.append(utt)
        return utt
