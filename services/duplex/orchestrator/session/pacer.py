"""Real-time pacing of a session's audio toward its client.

The worker runs ahead of real time (``worker_lead_ms``) so the orchestrator always has a
few frames in hand; the pacer hands them to the client by the monotonic clock, only
``lead_ms`` ahead of real time, so that PAUSE and STOP take effect within one frame
instead of after everything a client had already been sent. Frame ``k`` of a contiguous
run is due at ``start + k * frame - lead`` (the first ``lead`` worth goes at once). A
resume, a clear, or a frame sent later than the lead allows (an under-run: the client has
played everything it had, e.g. before a new utterance) starts a new run. Back-to-back
utterances stay one run, so the client's buffer never grows beyond the lead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from duplex.audio.frames import PcmFrame

log = logging.getLogger(__name__)

Send = Callable[[PcmFrame], Awaitable[None]]
Marker = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class _Frame:
    frame: PcmFrame
    arrived: float


@dataclass(frozen=True)
class _Marker:
    callback: Marker


class Pacer:
    """Sends queued 20 ms frames to ``send`` at real time, ``lead_ms`` ahead.

    Markers (``push_marker``) run in queue order once every frame before them has been
    sent, and survive ``clear()``: the session uses them for AudioEnd and first-audio
    timing. ``push`` waits while ``max_buffer`` frames are queued (the worker's own pacing
    keeps the queue short; reaching the bound is logged once per session).
    """

    def __init__(
        self,
        send: Send,
        *,
        lead_ms: int,
        frame_ms: int = 20,
        max_buffer: int = 500,
        observe_lateness: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_drained: Callable[[], None] | None = None,
        name: str = "pacer",
    ) -> None:
        if lead_ms < 0 or frame_ms <= 0 or max_buffer <= 0:
            raise ValueError("lead_ms >= 0, frame_ms > 0 and max_buffer > 0 are required")
        self._send = send
        self._lead = lead_ms / 1000
        self._frame = frame_ms / 1000
        # Late by more than the lead: the client has run dry, so start a new run.
        self._gap = max(self._lead, self._frame)
        self._max_buffer = max_buffer
        self._observe = observe_lateness
        self._clock = clock
        self._on_drained = on_drained
        self._name = name
        self._items: collections.deque[_Frame | _Marker] = collections.deque()
        self._frames = 0  # frames in _items
        self._paused = False
        self._run_start: float | None = None
        self._run_k = 0
        self._data = asyncio.Event()  # something was queued
        self._control = asyncio.Event()  # pause / resume / clear
        self._space = asyncio.Event()
        self._space.set()
        self._warned_full = False
        self._epoch = 0  # bumped by clear()
        self._task: asyncio.Task[None] | None = None
        self.frames_sent = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def aclose(self) -> None:
        """Stop sending; buffered frames and markers are dropped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # A sink failure was logged by _run, and the session watches the task for it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._items.clear()
        self._frames = 0
        self._space.set()

    # -- input ----------------------------------------------------------------------------

    async def push(self, frame: PcmFrame) -> None:
        """Queue one frame; waits while the buffer is at its bound.

        A frame still waiting for room when ``clear()`` runs counts as buffered: it is dropped.
        """
        epoch = self._epoch
        while self._frames >= self._max_buffer:
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "pacer buffer full, holding the worker back",
                    extra={"pacer": self._name, "frames": self._frames},
                )
            self._space.clear()
            await self._space.wait()
            if epoch != self._epoch:
                return
        self._items.append(_Frame(frame, self._clock()))
        self._frames += 1
        self._data.set()

    def push_marker(self, callback: Marker) -> None:
        """Run ``callback`` once every frame queued before it has been sent (or cleared)."""
        self._items.append(_Marker(callback))
        self._data.set()

    # -- control --------------------------------------------------------------------------

    def pause(self) -> None:
        """No frame is sent after this returns (a send already in progress completes)."""
        self._paused = True
        self._control.set()

    def resume(self) -> None:
        self._paused = False
        # The client drained its lead while paused: refill it.
        self._run_start = None
        self._control.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def clear(self) -> int:
        """Drop every buffered frame at once (markers stay); returns how many."""
        dropped = self._frames
        self._epoch += 1
        self._items = collections.deque(i for i in self._items if isinstance(i, _Marker))
        self._frames = 0
        self._run_start = None
        self._space.set()
        self._control.set()
        return dropped

    def pop_next(self) -> PcmFrame | None:
        """Take the next buffered frame out of the queue (it will not be sent), or None."""
        for i, item in enumerate(self._items):
            if isinstance(item, _Frame):
                del self._items[i]
                self._frames -= 1
                self._space.set()
                return item.frame
        return None

    def drop_tail(self, count: int) -> int:
        """Drop up to ``count`` of the most recently queued frames still buffered."""
        kept: list[_Frame | _Marker] = []
        dropped = 0
        while self._items and dropped < count:
            item = self._items.pop()
            if isinstance(item, _Frame):
                dropped += 1
            else:
                kept.append(item)
        self._items.extend(reversed(kept))
        self._frames -= dropped
        self._space.set()
        self._control.set()
        return dropped

    @property
    def buffered(self) -> int:
        """Frames queued and not yet sent."""
        return self._frames

    # -- the sending task -----------------------------------------------------------------

    async def _wait(self, event: asyncio.Event, delay_s: float | None) -> None:
        """Until ``event`` is set, or ``delay_s`` passes (a timer: cheaper than wait_for, which
        makes a task per call, and this runs once per frame per session)."""
        event.clear()
        if delay_s is None:
            await event.wait()
            return
        timer = asyncio.get_running_loop().call_later(delay_s, event.set)
        try:
            await event.wait()
        finally:
            timer.cancel()

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The sink failed (client gone): the transport ends the session.
            log.exception("pacer stopped", extra={"pacer": self._name})
            raise

    async def _loop(self) -> None:
        while True:
            if not self._items:
                await self._wait(self._data, None)
                continue
            head = self._items[0]
            if isinstance(head, _Marker):
                self._items.popleft()
                await head.callback()
                continue
            if self._paused:
                await self._wait(self._control, None)
                continue
            now = self._clock()
            if self._run_start is None:
                self._rebase(now)
            assert self._run_start is not None
            due = max(self._run_start, self._run_start + self._run_k * self._frame - self._lead)
            if due > now:
                # Woken early by pause / clear: look again at what is at the head now.
                await self._wait(self._control, due - now)
                continue
            self._items.popleft()
            self._frames -= 1
            self._space.set()
            await self._send(head.frame)
            self.frames_sent += 1
            if not self._frames and self._on_drained is not None:
                self._on_drained()
            if self._observe is not None:
                # Late against the schedule, or against the frame's arrival when it came
                # after its due time (an under-run is the worker's, not the pacer's).
                self._observe(max(0.0, now - max(due, head.arrived)))
            self._run_k += 1
            if now - due > self._gap:
                self._rebase(self._clock())

    def _rebase(self, now: float) -> None:
        self._run_start = now
        self._run_k = 0
