"""A session's way out to its client: the pacer, the transport's audio sink, AudioEnd markers,
first-audio timing, and the record of what the listener heard.

Frames arrive tagged with their client text positions; the pacer sends them at real time
to the transport's `AudioSink`; the `HeardTracker` follows both sides so that a cut can say
which words were heard. `cut()` silences the output within one frame: the pacer stops, the
transport drops what it holds, and the next frame goes out faded to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from duplex.audio.frames import PcmFrame
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import AudioEnd, ServerMessage
from duplex.orchestrator.session.heard import Heard, HeardTracker
from duplex.orchestrator.session.pacer import Pacer
from duplex.orchestrator.session.utterance import Utterance
from duplex.orchestrator.transports.base import ClientChannel

PACER_MAX_FRAMES = 250  # 5 s; the worker's own lead keeps the buffer far below this


@dataclass(frozen=True)
class Cut:
    """Where an interruption cut the output."""

    heard: Heard | None
    cut_at: float  # monotonic time the output went silent


class Output:
    """Paced audio and in-order AudioEnds toward one client."""

    def __init__(
        self,
        channel: ClientChannel,
        metrics: OrchestratorMetrics,
        *,
        lead_ms: int,
        on_change: Callable[[], None],
        name: str,
    ) -> None:
        self._channel = channel
        self._metrics = metrics
        self._on_change = on_change
        self._heard = HeardTracker()
        self._ends_queued = 0  # AudioEnd markers in the pacer
        self.first_audio_ms: float | None = None  # of the session's first voiced utterance
        self.pacer = Pacer(
            self._send_frame,
            lead_ms=lead_ms,
            max_buffer=PACER_MAX_FRAMES,
            observe_lateness=metrics.frame_send_lateness_seconds.observe,
            on_drained=on_change,
            name=name,
            ticker=channel.pacer_clock,
        )

    @property
    def busy(self) -> bool:
        """Audio or AudioEnds still to be sent."""
        return self._ends_queued > 0 or self.pacer.buffered > 0

    async def send(self, message: ServerMessage) -> None:
        await self._channel.messages.send_message(message)

    async def push(self, utt: Utterance, frame: PcmFrame) -> None:
        """Queue one frame of ``utt`` (its span in client positions)."""
        assert frame.span is not None
        self._heard.arrived(frame.span)
        await self.pacer.push(frame)
        if not utt.first_frame_queued:
            utt.first_frame_queued = True
            self.pacer.push_marker(functools.partial(self._first_audio, utt))

    def queue_end(self, index: int) -> None:
        """AudioEnd for utterance ``index`` once everything queued before it has been sent."""
        self._ends_queued += 1
        self.pacer.push_marker(functools.partial(self._audio_end, index))

    async def cut(self, fade_ms: int) -> None:
        """Silence now: no frame leaves the pacer (paused), the transport drops what it holds,
        and with ``fade_ms`` > 0 the next frame goes out faded to zero as the last one."""
        self.pacer.pause()
        self._heard.unsend(self._channel.audio.clear())
        faded = self.pacer.pop_next() if fade_ms > 0 else None
        if faded is not None:
            await self._send_frame(fade_out(faded, fade_ms))

    def heard(self, pending: list[Utterance]) -> Heard | None:
        texts = {u.index: u.text for u in pending}
        return self._heard.heard(texts, pending[0].index if pending else None)

    async def play_out(self) -> None:
        """Until what is queued now has been sent (bounded by its own length plus a second)."""
        played = asyncio.Event()

        async def mark() -> None:
            played.set()

        self.pacer.push_marker(mark)
        budget = self.pacer.buffered * 0.02 + 1.0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget):
                await played.wait()

    async def _audio_end(self, index: int) -> None:
        self._ends_queued -= 1
        self._heard.forget_before(index)
        await self.send(AudioEnd(index))
        self._on_change()

    async def _send_frame(self, frame: PcmFrame) -> None:
        await self._channel.audio.send(frame)
        self._heard.sent(frame)
        self._metrics.frames_sent_total.inc()

    async def _first_audio(self, utt: Utterance) -> None:
        if utt.stopped:
            return
        latency = time.monotonic() - utt.first_text_at
        self._metrics.first_audio_seconds.observe(latency)
        if self.first_audio_ms is None:
            self.first_audio_ms = round(latency * 1000, 1)


def fade_out(frame: PcmFrame, fade_ms: int) -> PcmFrame:
    """``frame`` ramped linearly to zero over its first ``fade_ms``, silent after."""
    samples = frame.array().astype(np.float32)
    ramp = max(1, frame.sample_rate * fade_ms // 1000)
    gain = np.zeros(len(samples), dtype=np.float32)
    n = min(ramp, len(samples))
    gain[:n] = 1.0 - (1.0 + np.arange(n, dtype=np.float32)) / ramp
    return PcmFrame((samples * gain).astype("<i2").tobytes(), frame.sample_rate, frame.span)
