"""One timer for the pacers of many sessions.

A timer and a task wake-up per frame per session is most of what pacing costs at hundreds
of sessions. A `PacerClock` keeps one task that wakes on a grid of ``slot_s`` (a fraction of
a frame) and serves every pacer with a frame due by then, in turn, on the clock's task:
sends that complete without waiting (uvicorn's WebSocket send, a WebRTC track's queue) cost
no task switch at all. Pacers align their schedules to the grid (`PacerClock.align`), so a
frame is served at its due time, not up to a slot after it; sessions spread over the slots
by when they started, which spreads the work over the frame.

A pacer's service that does wait (a server holding a send back) is handed, half done, to
that pacer's own task (`resume`): one slow client never holds the clock, nor the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol

DEFAULT_SLOT_S = 0.0025  # 8 slots per 20 ms frame: 2.5 ms is the most a due time moves
_IDLE_EXIT_S = 2.0  # the task ends after this long with no pacer scheduled
_TOLERANCE = 1e-6  # of a slot: float noise in a time on the grid must not move it a slot


class Served(Protocol):
    """What the clock calls when a pacer's slot comes."""

    def serve(self) -> None: ...


class PacerClock:
    """Wakes on a grid of ``slot_s`` and serves the pacers scheduled up to then.

    Its task runs while pacers are scheduled, and ends by itself after a while with none;
    ``aclose`` stops it at shutdown.
    """

    def __init__(
        self, *, slot_s: float = DEFAULT_SLOT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if slot_s <= 0:
            raise ValueError(f"slot_s must be > 0, got {slot_s}")
        self.slot_s = slot_s
        self.clock = clock
        self._slots: dict[int, list[Served]] = {}
        self._heap: list[int] = []  # slot numbers in _slots
        self._armed: dict[Served, int] = {}  # pacer -> the slot it is served in
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._sleeping_until = -math.inf  # the slot the task sleeps towards
        self._closed = False

    def align(self, t: float) -> float:
        """``t`` moved up to the next grid point (a run's start, so its frames fall on it)."""
        return math.ceil(t / self.slot_s - _TOLERANCE) * self.slot_s

    def schedule(self, pacer: Served, due: float | None) -> None:
        """Serve ``pacer`` once ``due`` has come (None, or the past: in the next pass).
        A pacer is in one slot at a time: an earlier slot replaces a later one."""
        if self._closed:
            return
        slot = -1 if due is None else math.ceil(due / self.slot_s - _TOLERANCE)
        current = self._armed.get(pacer)
        if current is not None and current <= slot:
            return
        self._armed[pacer] = slot
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [pacer]
            heapq.heappush(self._heap, slot)
        else:
            bucket.append(pacer)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="pacer-clock")
        elif slot < self._sleeping_until:
            self._wake.set()

    def cancel(self, pacer: Served) -> None:
        """Not served again until scheduled again (its old slot entry is skipped)."""
        self._armed.pop(pacer, None)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._slots.clear()
        self._heap.clear()
        self._armed.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._heap:
                # Idle: stay a while (pacers go idle and busy again all the time between
                # a worker's batches), then end rather than outlive every session.
                self._sleeping_until = math.inf
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_IDLE_EXIT_S):
                        await self._wake.wait()
                self._sleeping_until = -math.inf
                if not self._heap:
                    return
                continue
            now = self.clock()
            current = math.floor(now / self.slot_s + _TOLERANCE)
            if self._heap[0] > current:
                self._sleeping_until = self._heap[0]
                self._wake.clear()
                delay = self._heap[0] * self.slot_s - now
                timer = loop.call_at(loop.time() + delay, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
                    self._sleeping_until = -math.inf
                continue
            slot = heapq.heappop(self._heap)
            for pacer in self._slots.pop(slot):
                if self._armed.get(pacer) == slot:
                    del self._armed[pacer]
                    pacer.serve()  # never raises: failures go to the pacer's own task


@types.coroutine
def resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Finish ``coro``, already stepped once and waiting on ``waiting_on``, inside the task
    that awaits this: what that task would have done had it started the coroutine itself.
    Returns the coroutine's value."""
    while True:
        try:
            value = yield waiting_on
        except BaseException as exc:  # a cancellation or deadline goes into the coroutine
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting_on = coro.send(value)
            except StopIteration as stop:
                return stop.value
