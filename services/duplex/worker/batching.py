"""Several frames per gRPC message, for a client that asks for them.

One message per 20 ms frame costs both ends a message's overhead 50 times a second per
session; at hundreds of sessions that overhead, not the audio, is what an orchestrator spends
its time on. A client that sets ``SessionOpen.max_frames_per_message`` gets up to that many
consecutive frames per message, each still with its own sequence number and text bounds.

The session runs ``(max_frames - 1)`` frames further ahead than the client asked
(:func:`session_lead_ms`); the batcher holds its frames back until the client's own lead
would otherwise shrink below what it asked for, then sends everything held at once. The
client therefore always holds at least its lead (less at most one frame), and up to
``max_frames - 1`` frames more. Utterance ends, the session's end and its errors flush what
is held first, so the order of events never changes. Framing into 20 ms stays where it was.
The session may hand over a group of frames as one list (`Session.batches`): one step of
the reading task per group instead of per frame.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from duplex.worker.session_messages import FrameEvent, SessionEvent

Batch = list[FrameEvent] | SessionEvent


def session_lead_ms(client_lead_ms: int, max_frames: int, frame_ms: int) -> int:
    """The lead the session paces at so that batches of ``max_frames`` can form."""
    if client_lead_ms == 0:
        return 0  # as fast as produced: whatever is ready goes, no holding
    return client_lead_ms + (max_frames - 1) * frame_ms


class FrameBatcher:
    """Reads a session's events in a task of its own and hands them out in batches.

    ``batches()`` yields a list of consecutive frames, or a single non-frame event. It owns
    the reading task: it cancels and awaits it when the iteration ends.
    """

    def __init__(
        self,
        events: AsyncIterator[SessionEvent | list[FrameEvent]],
        *,
        max_frames: int,
        lead_s: float,
        frame_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self._events = events
        self._max = max_frames
        self._lead = lead_s
        self._frame = frame_s
        self._clock = clock
        self._outbox: collections.deque[SessionEvent] = collections.deque()
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._finished = False
        self._error: BaseException | None = None
        self._client_until = 0.0  # when the client will have played every frame sent
        self._holding = False  # the consumer holds frames until a deadline

    async def _read(self) -> None:
        try:
            async for event in self._events:
                if isinstance(event, list):
                    self._outbox.extend(event)  # a group of frames the session released
                    wake = not self._holding or len(self._outbox) >= self._max
                else:
                    self._outbox.append(event)
                    wake = (
                        not self._holding
                        or len(self._outbox) >= self._max
                        or not isinstance(event, FrameEvent)
                    )
                if wake:
                    self._changed.set()  # a held frame wakes nobody: the hold has a timer
                if len(self._outbox) >= 4 * self._max:
                    # gRPC flow control holds the consumer: hold the session back too.
                    self._room.clear()
                    await self._room.wait()
        except Exception as exc:  # handed to the consumer, which raises it in order
            self._error = exc
        finally:
            self._finished = True
            self._changed.set()

    def _ready(self, now: float) -> int:
        """How many events to hand out now (0: hold)."""
        outbox = self._outbox
        if not outbox:
            return 0
        if not isinstance(outbox[0], FrameEvent):
            return 1
        frames = 0
        for event in outbox:
            if not isinstance(event, FrameEvent) or frames == self._max:
                return frames  # an end (or a full batch) behind them: no reason to wait
            frames += 1
        if self._finished or self._lead == 0 or self._client_until - now <= self._lead:
            return frames
        return 0

    async def batches(self) -> AsyncIterator[Batch]:
        reader = asyncio.create_task(self._read(), name="frame-batcher")
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._changed.clear()
                now = self._clock()
                count = self._ready(now)
                if count:
                    if not isinstance(self._outbox[0], FrameEvent):
                        yield self._outbox.popleft()
                    else:
                        batch: list[FrameEvent] = []
                        for _ in range(count):
                            frame = self._outbox.popleft()
                            assert isinstance(frame, FrameEvent)  # _ready counted frames only
                            batch.append(frame)
                        self._client_until = max(self._client_until, now) + count * self._frame
                        yield batch
                    self._room.set()
                    continue
                if self._finished and not self._outbox:
                    if self._error is not None:
                        raise self._error
                    return
                if not self._outbox:
                    await self._changed.wait()
                    continue
                # Frames held: until more come, or the client's lead would shrink below its ask.
                timer = loop.call_at(
                    loop.time() + self._client_until - self._lead - now, self._changed.set
                )
                self._holding = True
                try:
                    await self._changed.wait()
                finally:
                    self._holding = False
                    timer.cancel()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
