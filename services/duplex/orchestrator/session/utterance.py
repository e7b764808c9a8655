"""One client utterance and its text positions across worker streams.

A client utterance keeps its own numbering and its whole text; the worker stream that
voices it numbers utterances from 0 and counts text positions from where it was handed
the text. After a failover the new stream starts at the last voiced position of each
pending utterance (``base``), so a worker position ``p`` is client position ``base + p``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from duplex.text import ClauseSegmenter


@dataclass(eq=False)
class Utterance:
    """One client utterance: every position here is in the client's text."""

    index: int
    segmenter: ClauseSegmenter
    text: str = ""
    final: bool = False  # the client's final chunk arrived
    ready: int = 0  # text[:ready] may go to the worker (a clause ended within it)
    base: int = 0  # client position of the current stream's position 0
    forwarded: int = 0  # text[:forwarded] went to the current stream
    voiced: int = 0  # end of the last clause the worker finished voicing
    worker_utt: int | None = None  # its number on the current stream, once text went there
    final_sent: bool = False
    done: bool = False  # ended by the worker, by an interruption, or had nothing to voice
    stopped: bool = False
    first_text_at: float = field(default_factory=time.monotonic)
    first_frame_queued: bool = False

    @property
    def unvoiced(self) -> int:
        return 0 if self.done else len(self.text) - self.voiced

    def take_chunk(self) -> tuple[str, bool] | None:
        """The next chunk for the current stream and its is_final, or None (nothing to send).

        An utterance whose stream has none of it yet never starts with blank text (the
        worker refuses an empty first chunk, and whitespace has nothing to voice): a blank
        final remainder completes it here instead.
        """
        if self.done or self.final_sent:
            return None
        end = len(self.text) if self.final else self.ready
        chunk = self.text[self.forwarded : end]
        if self.worker_utt is None and not chunk.strip():
            if self.final:
                self.voiced = len(self.text)
                self.done = True
            return None
        if not chunk and not self.final:
            return None
        return chunk, self.final

    def mark_sent(self, chunk: str, is_final: bool) -> None:
        self.forwarded += len(chunk)
        self.final_sent = is_final

    def rebase(self) -> None:
        """A new stream takes over: it gets the text from the voiced position on."""
        self.base = self.forwarded = self.voiced
        self.worker_utt = None
        self.final_sent = False


def unvoiced_chars(pending: Iterable[Utterance]) -> int:
    """Characters received from the client that no worker has voiced."""
    return sum(u.unvoiced for u in pending)
