"""A session's ear: client mic audio -> VAD -> barge-in, transcripts and the spoken loop.

When the user starts speaking while the system speaks, the output is cut at once
(`Session.interrupt`, with a short fade) and the client gets `BargeIn` with what it heard.
Then, by policy:

- ``stop``: the rest of the utterance is dropped and the worker STOPped;
- ``resume``: the rest is held and the worker PAUSEd. A *false interruption* (the user's
  speech ends within ``false_interruption_ms`` and, with ASR on, no word was transcribed)
  resumes the utterance from the cut; a real one (longer speech, or words) stops it.

Either way `BargeInEnd {resumed}` says how it was settled. With ASR on, every finished user
utterance is transcribed and sent as `Transcript`; with ``reply: echo`` it is spoken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from duplex.audio.frames import PcmFrame
from duplex.audio.mic import MicInput
from duplex.audio.speech import SpeechEnded, SpeechStarted, SpeechTracker
from duplex.audio.vad import SileroModel, make_vad
from duplex.orchestrator.config import OrchestratorConfig
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.orchestrator.protocol import (
    BargeIn,
    BargeInEnd,
    BargeInOptions,
    BargeInPolicy,
    HeardPrecision,
    TextChunk,
    Transcript,
)
from duplex.orchestrator.session.core import Session, SessionError
from duplex.orchestrator.session.heard import Heard
from duplex.orchestrator.session.output import Cut
from duplex.orchestrator.session.state import SessionState

log = logging.getLogger(__name__)


class Transcriber(Protocol):
    async def transcribe(self, audio: PcmFrame) -> str: ...


@dataclass(frozen=True)
class BargeInSettings:
    """The orchestrator's `barge_in`/`vad` config with a session's own overrides applied."""

    enabled: bool
    policy: BargeInPolicy
    min_speech_ms: int
    min_silence_ms: int
    false_interruption_ms: int
    fade_ms: int

    @classmethod
    def resolve(cls, config: OrchestratorConfig, options: BargeInOptions | None) -> BargeInSettings:
        b, v = config.barge_in, config.vad
        o = options or BargeInOptions()

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return cls(
            enabled=pick(o.enabled, b.enabled),
            policy=BargeInPolicy(pick(o.policy, b.policy)),
            min_speech_ms=pick(o.min_speech_ms, v.min_speech_duration_ms),
            min_silence_ms=pick(o.min_silence_ms, v.min_silence_duration_ms),
            false_interruption_ms=pick(o.false_interruption_ms, b.false_interruption_ms),
            fade_ms=b.fade_ms,
        )


class Listener:
    """Feeds one session's mic frames through the VAD and acts on the speech it finds."""

    def __init__(
        self,
        session: Session,
        settings: BargeInSettings,
        config: OrchestratorConfig,
        input_rate: int,
        metrics: OrchestratorMetrics,
        *,
        transcriber: Transcriber | None = None,
        silero_model: SileroModel | None = None,
    ) -> None:
        vad = make_vad(
            config.vad.engine,
            aggressiveness=config.vad.aggressiveness,
            threshold=config.vad.silero_threshold,
            silero_model=silero_model,
        )
        self._mic: MicInput | None = MicInput(
            input_rate, vad, SpeechTracker(settings.min_speech_ms, settings.min_silence_ms)
        )
        self._input_rate = input_rate
        self._session = session
        self._settings = settings
        self._metrics = metrics
        self._transcriber = transcriber
        self._echo = config.asr.reply == "echo"
        self._transport = session.channel.kind.value
        self.barge_ins = 0
        self._barged = False  # a barge-in is waiting to be settled
        self._speaking = False  # the user is speaking now
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def input_rate(self) -> int:
        return self._input_rate

    async def push(self, frame: PcmFrame) -> None:
        """One 20 ms mic frame; raises `MicFrameError` for a frame of the wrong size or rate."""
        mic = self._mic
        if mic is None:
            return  # closed
        received = time.monotonic()
        for event in mic.push(frame):
            if isinstance(event, SpeechStarted):
                self._speaking = True
                await self._speech_started(event, received)
            else:
                self._speaking = False
                self._spawn(self._speech_ended(event), "speech-ended")

    async def close(self) -> None:
        tasks = [t for t in (self._timer, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # The session's objects form reference cycles (uvicorn's protocol and transport, the
        # session's callbacks), freed only by a full cycle collection; the mic input holds a
        # soxr resampler (~50 KB of native memory, unseen by the collector's thresholds), so it
        # goes now rather than with the rest of the session.
        self._mic = None

    async def _speech_started(self, event: SpeechStarted, received: float) -> None:
        session = self._session
        if not self._settings.enabled or session.state is not SessionState.SPEAKING:
            return
        hold = self._settings.policy is BargeInPolicy.RESUME
        detect_s = max(0.0, (event.decided_ms - event.onset_ms) / 1000)

        async def announce(cut: Cut) -> None:
            self.barge_ins += 1
            cut_s = max(0.0, cut.cut_at - received)
            self._observe(detect_s, cut_s)
            heard = cut.heard or Heard(0, 0, 0, "", HeardPrecision.CLAUSE)
            await session.send(
                BargeIn(
                    utterance=heard.utterance,
                    at_ms=heard.at_ms,
                    heard_chars=heard.chars,
                    heard_text=heard.text,
                    heard_precision=heard.precision,
                    latency_ms=round((detect_s + cut_s) * 1000, 1),
                )
            )
            log.info(
                "barge-in",
                extra={"session_id": session.session_id, "policy": self._settings.policy.value,
                       "heard_chars": heard.chars, "detect_ms": round(detect_s * 1000, 1),
                       "cut_ms": round(cut_s * 1000, 2)},
            )  # fmt: skip
            if not hold:
                await session.send(BargeInEnd(resumed=False))

        await session.interrupt(hold=hold, fade_ms=self._settings.fade_ms, announce=announce)
        if not hold:
            return
        self._barged = True
        wait_s = max(0.0, self._settings.false_interruption_ms / 1000 - detect_s)
        self._timer = asyncio.create_task(
            self._real_after(wait_s), name=f"barge-in-timer:{session.session_id}"
        )

    def _observe(self, detect_s: float, cut_s: float) -> None:
        labels = {"transport": self._transport, "policy": self._settings.policy.value}
        self._metrics.barge_ins_total.labels(**labels).inc()
        self._metrics.barge_in_detect_seconds.labels(transport=self._transport).observe(detect_s)
        self._metrics.barge_in_cut_seconds.labels(transport=self._transport).observe(cut_s)

    async def _real_after(self, wait_s: float) -> None:
        """Speech still going on after ``false_interruption_ms``: a real interruption."""
        await asyncio.sleep(wait_s)
        if self._barged and self._speaking:
            await self._settle(resumed=False)

    async def _speech_ended(self, event: SpeechEnded) -> None:
        text = await self._transcribe(event)
        if self._barged:
            short = event.end_ms - event.onset_ms < self._settings.false_interruption_ms
            await self._settle(resumed=short and not text.strip())
        if text.strip() and self._echo:
            with contextlib.suppress(SessionError):  # e.g. too long: the loop just skips it
                await self._session.on_text(TextChunk(text.strip(), is_final=True))

    async def _transcribe(self, event: SpeechEnded) -> str:
        if self._transcriber is None or event.audio is None:
            return ""
        try:
            text = await self._transcriber.transcribe(event.audio)
        except Exception as exc:  # a task boundary: ASR failing must not end the session
            log.warning(
                "transcription failed",
                extra={"session_id": self._session.session_id, "error": repr(exc)},
            )
            return ""
        if text.strip():
            await self._session.send(Transcript(text=text.strip()))
        return text

    async def _settle(self, *, resumed: bool) -> None:
        if not self._barged:
            return
        self._barged = False
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        self._metrics.barge_in_outcomes_total.labels(
            outcome="resumed" if resumed else "stopped"
        ).inc()
        session = self._session
        end = BargeInEnd(resumed=resumed)
        if session.state is not SessionState.BARGED_IN:
            await session.send(end)
        elif resumed:
            await session.send(end)
            await session.resume_output()
        else:

            async def announce(cut: Cut) -> None:
                await session.send(end)

            await session.interrupt(hold=False, announce=announce)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=f"{name}:{self._session.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "listener task failed",
                extra={"session_id": self._session.session_id},
                exc_info=task.exception(),
            )
