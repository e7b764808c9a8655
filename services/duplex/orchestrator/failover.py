"""Text positions across worker streams: what each utterance sent, what was voiced, what to resend.

A client utterance keeps its own numbering and its whole text; the worker stream that
voices it numbers utterances from 0 and counts text positions from where it was handed
the text. After a failover the new stream starts at the last voiced position of each
pending utterance (``base``), so a worker position ``p`` is client position ``base + p``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from duplex.orchestrator.worker_client import WorkerClient, WorkerStream, WorkerStreamError
from duplex.routing import Decision
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
    done: bool = False  # ended by the worker, by STOP, or had nothing to voice
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


@dataclass(eq=False)
class Link:
    """The session's current worker stream and its numbering."""

    decision: Decision
    client: WorkerClient
    stream: WorkerStream
    next_utt: int = 0
    by_worker_utt: dict[int, Utterance] = field(default_factory=dict)
    partial_frames: int = 0  # frames queued since the last clause end (a clause half received)
    last_progress: float = field(default_factory=time.monotonic)
    failed: bool = False
    max_text_chars: int = 0  # the worker's limit per utterance (0: none reported)

    @property
    def worker(self) -> str:
        return self.decision.worker.name

    def assign(self, utt: Utterance) -> None:
        """Give ``utt`` the stream's next utterance number (the worker counts the same way)."""
        utt.worker_utt = self.next_utt
        self.by_worker_utt[self.next_utt] = utt
        self.next_utt += 1

    def owes_audio(self, pending: Iterable[Utterance]) -> bool:
        """Whether silence from the worker now means it is stuck.

        Only a final chunk or a clause half received proves the worker has audio to
        send; a non-final clause might still wait in the worker's own segmenter.
        """
        if self.partial_frames > 0:
            return True
        return any(u.final_sent and not u.done and u.worker_utt is not None for u in pending)


LOAD_TIMEOUT_S = 60.0  # a worker loading a model on demand (Kokoro takes seconds)


async def open_link(
    client: WorkerClient,
    decision: Decision,
    *,
    session_id: str,
    language: str,
    sample_rate: int,
    lead_ms: int,
    open_timeout_s: float,
) -> Link:
    """Open the session on the decided worker (loading the model first if it must)."""
    if decision.needs_load and decision.model_id is not None:
        await client.load_model(decision.model_id, timeout_s=LOAD_TIMEOUT_S)
    info = await client.info(timeout_s=open_timeout_s)
    stream = await client.open_stream(
        session_id, decision.model_id, sample_rate, language, lead_ms, timeout_s=open_timeout_s
    )
    if stream.opened.sample_rate != sample_rate:
        await stream.close()
        raise WorkerStreamError(
            client.target, f"opened at {stream.opened.sample_rate} Hz, not {sample_rate}"
        )
    return Link(decision=decision, client=client, stream=stream, max_text_chars=info.max_text_chars)


def unvoiced_chars(pending: Iterable[Utterance]) -> int:
    """Characters received from the client that no worker has voiced."""
    return sum(u.unvoiced for u in pending)
