"""Real-time pacing of a session's audio toward its client.

The worker runs ahead of real time (``worker_lead_ms``) so the orchestrator always has a
few frames in hand; the pacer hands them to the client by the monotonic clock, only
``lead_ms`` ahead of real time, so that PAUSE and STOP take effect within one frame
instead of after everything a client had already been sent. Frame ``k`` of a contiguous
run is due at ``start + k * frame - lead`` (the first ``lead`` worth goes at once). A
resume, a clear, or a frame sent later than the lead allows (an under-run: the client has
played everything it had, e.g. before a new utterance) starts a new run. Back-to-back
utterances stay one run, so the client's buffer never grows beyond the lead.

Pacers share a `PacerClock` (one per transport): its one task serves every pacer whose
frame is due, instead of a timer and a task wake-up per frame per session. A run starts on
the clock's grid (at most a slot after the frame that starts it would have been due), and
only the frames beyond the first lead's worth wait for it, so first audio is not delayed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.session.pacer_clock import PacerClock, resume

log = logging.getLogger(__name__)

# A frame this close to its due time goes now: waiting would cost a pass of the ticker.
_EARLY_S = 50e-6

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

    Frames are sent from ``ticker``'s task (a private one when none is given). The pacer's
    own ``task`` finishes a send that had to wait, and ends with the error of a send that
    failed: the session watches it.
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
        ticker: PacerClock | None = None,
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
        self._on_drained = on_drained
        self._name = name
        self._own_ticker = ticker is None
        self._ticker = ticker if ticker is not None else PacerClock(clock=clock)
        self._clock = self._ticker.clock
        self._items: collections.deque[_Frame | _Marker] = collections.deque()
        self._frames = 0  # frames in _items
        self._paused = False
        self._run_origin = 0.0  # when the run started
        self._run_start: float | None = None  # the run's schedule, on the ticker's grid
        self._run_k = 0
        self._space = asyncio.Event()
        self._space.set()
        self._warned_full = False
        self._epoch = 0  # bumped by clear()
        self._task: asyncio.Task[None] | None = None
        # A service that had to wait, or failed: the own task finishes it, or raises.
        self._handoff: tuple[Coroutine[Any, Any, float | None], Any] | BaseException | None = None
        self._handed = asyncio.Event()
        self._serving = False  # a service is in progress (on the ticker, or handed off)
        self._closed = False
        self.frames_sent = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)
            self._wake()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def aclose(self) -> None:
        """Stop sending; buffered frames and markers are dropped."""
        self._closed = True
        self._ticker.cancel(self)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # A sink failure was logged by _run, and the session watches the task for it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        handoff, self._handoff = self._handoff, None
        if isinstance(handoff, tuple):
            handoff[0].close()
        if self._own_ticker:
            await self._ticker.aclose()
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
        if len(self._items) == 1:
            self._wake()  # a frame behind others waits for the head's turn

    def push_marker(self, callback: Marker) -> None:
        """Run ``callback`` once every frame queued before it has been sent (or cleared)."""
        self._items.append(_Marker(callback))
        if len(self._items) == 1:
            self._wake()

    # -- control --------------------------------------------------------------------------

    def pause(self) -> None:
        """No frame is sent after this returns (a send already in progress completes)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        # The client drained its lead while paused: refill it.
        self._run_start = None
        self._wake()

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
        self._wake()
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
        self._wake()
        return dropped

    @property
    def buffered(self) -> int:
        """Frames queued and not yet sent."""
        return self._frames

    # -- sending --------------------------------------------------------------------------

    def _wake(self) -> None:
        """Look at the queue's head in the ticker's next pass."""
        if self._task is not None and not self._serving and not self._closed:
            self._ticker.schedule(self, None)

    def serve(self) -> None:
        """Called by the ticker: send what is due, then ask to be served at the next due time.
        Runs to its end here unless a send has to wait; then the own task finishes it."""
        if self._serving or self._closed or self._task is None:
            return
        self._serving = True
        service = self._send_due()
        try:
            waiting_on = service.send(None)
        except StopIteration as done:
            self._serving = False
            if done.value is not None:
                self._ticker.schedule(self, done.value)
            return
        except BaseException as exc:  # the sink failed: the own task ends with it
            self._handoff = exc
        else:
            self._handoff = (service, waiting_on)
        self._handed.set()

    async def _run(self) -> None:
        try:
            while True:
                await self._handed.wait()
                self._handed.clear()
                handoff, self._handoff = self._handoff, None
                if isinstance(handoff, BaseException):
                    raise handoff
                if handoff is not None:
                    await resume(*handoff)
                self._serving = False
                self._wake()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The sink failed (client gone): the transport ends the session.
            log.exception("pacer stopped", extra={"pacer": self._name})
            raise

    async def _send_due(self) -> float | None:
        """Markers and frames due now, in order; returns when the next frame is due (None:
        nothing to do until a push, resume or clear)."""
        while True:
            if not self._items:
                return None
            head = self._items[0]
            if isinstance(head, _Marker):
                self._items.popleft()
                await head.callback()
                continue
            if self._paused:
                return None
            now = self._clock()
            if self._run_start is None:
                self._rebase(now)
            assert self._run_start is not None
            due = max(self._run_origin, self._run_start + self._run_k * self._frame - self._lead)
            if due > now + _EARLY_S:
                return due
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
        # The first lead's worth goes at once; later frames fall on the ticker's grid.
        self._run_origin = now
        self._run_start = self._ticker.align(now)
        self._run_k = 0
