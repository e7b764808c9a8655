"""Turning per-window VAD decisions into speech start and end events (a pure state machine)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from duplex.audio.frames import PcmFrame

# Window times are sums of sample counts over a rate (e.g. 20 ms at 48 kHz = 960/48):
# compare durations with a little slack so 300 ms made of thirds is still 300 ms.
_SLACK_MS = 1e-6


class SpeechState(Enum):
    """Where the tracker stands: the two MAYBE states wait for a run to last long enough."""

    SILENT = "silent"
    MAYBE_SPEECH = "maybe_speech"
    SPEAKING = "speaking"
    MAYBE_SILENCE = "maybe_silence"


@dataclass(frozen=True)
class SpeechStarted:
    """Speech has lasted ``min_speech_ms``: it began at audio time ``onset_ms`` and the window
    that ended at ``decided_ms`` decided it (``decided_ms - onset_ms`` is the VAD's delay)."""

    onset_ms: float
    decided_ms: float


@dataclass(frozen=True)
class SpeechEnded:
    """Silence has lasted ``min_silence_ms`` after speech that began at ``onset_ms``; the
    silence began at ``end_ms``. ``audio`` is the user's speech when the producer kept it
    (:class:`~duplex.audio.mic.MicInput` does, for ASR); the tracker itself has none."""

    onset_ms: float
    end_ms: float
    audio: PcmFrame | None = None


SpeechEvent = SpeechStarted | SpeechEnded


class SpeechTracker:
    """Debounces VAD windows into :class:`SpeechStarted` / :class:`SpeechEnded` events.

    No I/O and no clock: every time is an audio time in ms given by the caller, so the
    same audio always gives the same events. A run of speech shorter than ``min_speech_ms``
    (a cough, a click, a VAD blip) gives no event at all: any non-speech window before the
    run has lasted ``min_speech_ms`` drops it. Once speaking, silence gaps shorter than
    ``min_silence_ms`` (pauses between words) do not end the speech.
    """

    def __init__(self, min_speech_ms: float, min_silence_ms: float) -> None:
        if min_speech_ms < 0 or min_silence_ms < 0:
            raise ValueError(
                f"min_speech_ms and min_silence_ms must not be negative, "
                f"got {min_speech_ms} and {min_silence_ms}"
            )
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms
        self._state = SpeechState.SILENT
        self._onset_ms = 0.0
        self._silence_ms = 0.0  # where the current silence run began (MAYBE_SILENCE)

    @property
    def state(self) -> SpeechState:
        return self._state

    @property
    def speaking(self) -> bool:
        """True from the ``SpeechStarted`` event until the ``SpeechEnded`` event."""
        return self._state in (SpeechState.SPEAKING, SpeechState.MAYBE_SILENCE)

    @property
    def onset_ms(self) -> float | None:
        """Where the current (possible or started) speech run began; None while silent."""
        return None if self._state is SpeechState.SILENT else self._onset_ms

    def update(self, is_speech: bool, start_ms: float, duration_ms: float) -> list[SpeechEvent]:
        """Feed one VAD window covering ``[start_ms, start_ms + duration_ms)``."""
        if duration_ms < 0:
            raise ValueError(f"duration_ms must not be negative, got {duration_ms}")
        end_ms = start_ms + duration_ms
        state = self._state
        if state is SpeechState.SILENT:
            if is_speech:
                self._onset_ms = start_ms
                self._state = SpeechState.MAYBE_SPEECH
                return self._maybe_start(end_ms)
            return []
        if state is SpeechState.MAYBE_SPEECH:
            if is_speech:
                return self._maybe_start(end_ms)
            self._state = SpeechState.SILENT  # too short: a blip, not speech
            return []
        if state is SpeechState.SPEAKING:
            if is_speech:
                return []
            self._silence_ms = start_ms
            self._state = SpeechState.MAYBE_SILENCE
            return self._maybe_end(end_ms)
        # MAYBE_SILENCE
        if is_speech:
            self._state = SpeechState.SPEAKING  # a pause between words
            return []
        return self._maybe_end(end_ms)

    def reset(self) -> None:
        """Forget any speech in progress (a new stream); no event is emitted."""
        self._state = SpeechState.SILENT
        self._onset_ms = 0.0
        self._silence_ms = 0.0

    def _maybe_start(self, end_ms: float) -> list[SpeechEvent]:
        if end_ms - self._onset_ms + _SLACK_MS < self.min_speech_ms:
            return []
        self._state = SpeechState.SPEAKING
        return [SpeechStarted(onset_ms=self._onset_ms, decided_ms=end_ms)]

    def _maybe_end(self, end_ms: float) -> list[SpeechEvent]:
        if end_ms - self._silence_ms + _SLACK_MS < self.min_silence_ms:
            return []
        self._state = SpeechState.SILENT
        return [SpeechEnded(onset_ms=self._onset_ms, end_ms=self._silence_ms)]
