"""Reading a session's worker stream: typed frames checked, mapped to client positions."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from duplex.audio.frames import PcmFrame, TextSpan, frame_bytes
from duplex.orchestrator.session.failover import Link
from duplex.orchestrator.session.utterance import Utterance
from duplex.workerclient import WorkerStreamError

OnFrame = Callable[[Utterance, PcmFrame], Awaitable[None]]


async def read_worker_events(
    link: Link,
    *,
    sample_rate: int,
    frame_timeout_s: float,
    pending: Iterable[Utterance],
    held: Callable[[], bool],
    on_frame: OnFrame,
    on_utterance_end: Callable[[], None],
) -> None:
    """Until the stream fails (WorkerError, raised) or the task is cancelled.

    Each frame must be one frame at ``sample_rate``; it goes to ``on_frame`` with its span
    in the client's positions (frames of an utterance STOP already ended are dropped). A
    worker silent for ``frame_timeout_s`` while it owes audio (and the output is not
    ``held``) has failed.
    """
    expected = frame_bytes(sample_rate)
    while True:
        try:
            event = await link.stream.next_event(frame_timeout_s / 2)
        except TimeoutError:
            stalled = time.monotonic() - link.last_progress >= frame_timeout_s
            if stalled and not held() and link.owes_audio(pending):
                raise WorkerStreamError(link.worker, f"no audio for {frame_timeout_s}s") from None
            continue
        if event is None:
            raise WorkerStreamError(link.worker, "stream ended")
        link.last_progress = time.monotonic()
        if isinstance(event, PcmFrame):
            if event.sample_rate != sample_rate or len(event.pcm) != expected:
                raise WorkerStreamError(
                    link.worker,
                    f"a frame of {len(event.pcm)} bytes at {event.sample_rate} Hz; "
                    f"expected {expected} bytes at {sample_rate} Hz",
                )
            utt = link.frame_owner(event)
            if utt is None:
                continue  # a frame already on its way when STOP came
            span = event.span
            assert span is not None
            client = TextSpan(utt.index, utt.base + span.start, utt.base + span.end,
                              span.clause_end)  # fmt: skip
            await on_frame(utt, PcmFrame(event.pcm, event.sample_rate, client))
            link.frame_queued(utt, event)
        elif link.utterance_ended(event) is not None:
            on_utterance_end()
