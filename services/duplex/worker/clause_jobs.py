"""A session's clause jobs in flight, and the order in which their frames may leave.

Several clauses of one session may synthesize at once (on different inference threads),
but their frames must reach the client in text order. Each job buffers its frames; only
the oldest job's frames are released, and the next job's buffer follows once the oldest
one is done. The newest frame of an unfinished job is held back: it may be the clause's
last (``clause_end``), which is only known when the job ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from duplex.audio.framing import FrameCutter
from duplex.audio.resample import StreamResampler
from duplex.text import Clause
from duplex.worker.adapters.base import Int16Array

SECONDS_PER_CHAR = 0.06
"""Estimated speech per character of a clause not yet synthesized (a look-ahead deadline).

Piper speaks English at ~14-16 characters a second; the estimate errs short, so a
look-ahead job is due a little early rather than late."""

U = TypeVar("U")


@dataclass(eq=False)
class ClauseJob(Generic[U]):
    """One clause's audio path: resampling and cutting run on the inference thread.

    ``cut`` and ``finish`` run on the inference thread; every other member is used on the
    event loop only.
    """

    generation: int
    utterance: U
    clause: Clause
    resampler: StreamResampler
    cutter: FrameCutter
    frames: deque[bytes] = field(default_factory=deque)  # cut, not yet released
    released: int = 0  # frames handed to the session's outbox
    done: bool = False

    def cut(self, chunk: Int16Array) -> list[bytes]:
        """Exact frames of a chunk of the voice's audio (inference thread)."""
        return self.cutter.push(self.resampler.push(chunk))

    def finish(self) -> list[bytes]:
        """The clause's remaining frames, the last one zero-padded (inference thread)."""
        frames = self.cutter.push(self.resampler.flush())
        last = self.cutter.flush()
        if last is not None:
            frames.append(last)
        return frames

    def unreleased_s(self, frame_s: float) -> float:
        """Audio of this clause not yet in the outbox: known once done, else estimated."""
        buffered = len(self.frames) * frame_s
        if self.done:
            return buffered
        estimate = SECONDS_PER_CHAR * len(self.clause.text) - self.released * frame_s
        return max(buffered, estimate)


class InFlight(Generic[U]):
    """A session's submitted clause jobs, oldest (earliest in the text) first."""

    def __init__(self) -> None:
        self._jobs: deque[ClauseJob[U]] = deque()

    def __len__(self) -> int:
        return len(self._jobs)

    def append(self, job: ClauseJob[U]) -> None:
        self._jobs.append(job)

    def clear(self) -> None:
        self._jobs.clear()

    def unreleased_s(self, frame_s: float) -> float:
        """Audio still to come from every job in flight (estimated for unfinished ones)."""
        return sum(job.unreleased_s(frame_s) for job in self._jobs)

    def release(self) -> Iterator[tuple[ClauseJob[U], bytes, bool]]:
        """Frames that may leave now, in text order, as (job, pcm, clause_end)."""
        while self._jobs:
            head = self._jobs[0]
            keep = 0 if head.done else 1
            while len(head.frames) > keep:
                pcm = head.frames.popleft()
                head.released += 1
                yield head, pcm, head.done and not head.frames
            if not head.done:
                return
            self._jobs.popleft()
