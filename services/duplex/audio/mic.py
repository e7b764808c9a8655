"""A client's microphone stream: validate 20 ms frames, resample, VAD, speech events, audio."""

from __future__ import annotations

import dataclasses

from duplex.audio.frames import FRAME_MS, SAMPLE_WIDTH, PcmFrame, frame_bytes
from duplex.audio.resample import StreamResampler
from duplex.audio.speech import SpeechEnded, SpeechEvent, SpeechTracker
from duplex.audio.vad import VoiceActivityDetector

MIC_RATES = (16000, 24000, 48000)


class MicFrameError(ValueError):
    """A mic frame (or a mic stream's settings) that the input does not take: wrong rate or
    wrong size. The message names what was expected and what came."""


class MicInput:
    """One client's mic audio in, speech events out.

    Each :meth:`push` takes exactly one 20 ms s16le mono frame at ``input_rate``, resamples
    it (one streaming resampler, so no clicks at frame edges) to the detector's rate, cuts
    the detector's windows (320 samples for webrtc, 512 for silero) from a small FIFO and
    feeds each decision to ``tracker`` with its audio time. Audio times are counted in
    samples from the start of the stream, so the same audio always gives the same times;
    soxr compensates its filter delay, so a time at the detector's rate is the input's time.
    Windows come out only when the resampler releases samples (about 12 ms behind the input
    at 24/48 kHz): a decision is up to one window plus that behind :attr:`audio_ms`.

    The user's speech is kept at the detector's rate from ``pre_roll_ms`` before the onset
    (the VAD decides after the speech has begun, and soft onsets score low) to where the
    silence began, at most ``keep_audio_s`` of it (the first part of a longer utterance), and
    handed out on :class:`SpeechEnded` as ``audio`` (for ASR). While no speech is pending,
    only the pre-roll is held.
    """

    def __init__(
        self,
        input_rate: int,
        vad: VoiceActivityDetector,
        tracker: SpeechTracker,
        *,
        keep_audio_s: float = 30.0,
        pre_roll_ms: int = 300,
    ) -> None:
        if input_rate not in MIC_RATES:
            raise MicFrameError(
                f"mic input rate must be one of {', '.join(map(str, MIC_RATES))} Hz, "
                f"got {input_rate} Hz"
            )
        if keep_audio_s <= 0:
            raise ValueError(f"keep_audio_s must be positive, got {keep_audio_s}")
        if pre_roll_ms < 0:
            raise ValueError(f"pre_roll_ms must not be negative, got {pre_roll_ms}")
        self.input_rate = input_rate
        self.vad = vad
        self.tracker = tracker
        self._frame_bytes = frame_bytes(input_rate)
        self._rate = vad.sample_rate
        self._window_bytes = vad.frame_samples * SAMPLE_WIDTH
        self._resampler = StreamResampler(input_rate, self._rate)
        self._fifo = bytearray()
        self._input_samples = 0  # input samples consumed (audio_ms)
        self._windowed = 0  # samples at the VAD rate already classified
        self._pre_roll = pre_roll_ms * self._rate // 1000
        self._keep_cap = int(keep_audio_s * self._rate)
        self._recent = bytearray()  # the last pre-roll + one window, from _recent_start on
        self._recent_start = 0
        self._utterance: bytearray | None = None  # the pending run's audio, pre-roll first
        self._utterance_start = 0
        self._utterance_onset: float | None = None

    @property
    def audio_ms(self) -> float:
        """Input audio consumed so far, in ms."""
        return self._input_samples * 1000 / self.input_rate

    @property
    def sample_rate(self) -> int:
        """The rate of the detector, of the audio times and of the kept speech audio."""
        return self._rate

    def push(self, frame: PcmFrame) -> list[SpeechEvent]:
        """Take one 20 ms frame; return the speech events its audio decided, in order."""
        if frame.sample_rate != self.input_rate:
            raise MicFrameError(
                f"{self._expected()}, got a frame at {frame.sample_rate} Hz "
                f"({len(frame.pcm)} bytes)"
            )
        if len(frame.pcm) != self._frame_bytes:
            raise MicFrameError(f"{self._expected()}, got {len(frame.pcm)} bytes")
        self._input_samples += frame.samples
        self._fifo += self._resampler.push(frame.pcm).astype("<i2", copy=False).tobytes()
        events: list[SpeechEvent] = []
        size = self._window_bytes
        while len(self._fifo) >= size:
            window = bytes(self._fifo[:size])
            del self._fifo[:size]
            events += self._classify(window)
        return events

    def _classify(self, window: bytes) -> list[SpeechEvent]:
        samples = len(window) // SAMPLE_WIDTH
        start = self._windowed
        self._windowed += samples
        self._remember(window)
        decisions = self.tracker.update(
            self.vad.is_speech(window), start * 1000 / self._rate, samples * 1000 / self._rate
        )
        events = [
            dataclasses.replace(e, audio=self._speech_audio(e)) if isinstance(e, SpeechEnded) else e
            for e in decisions
        ]
        self._follow_onset()
        return events

    def _remember(self, window: bytes) -> None:
        self._recent += window
        # The onset of a new run is the start of the window just classified at the earliest:
        # the pre-roll before it plus that window is all that must be held while silent.
        excess = len(self._recent) // SAMPLE_WIDTH - (self._pre_roll + len(window) // SAMPLE_WIDTH)
        if excess > 0:
            del self._recent[: excess * SAMPLE_WIDTH]
            self._recent_start += excess
        if self._utterance is not None:
            # Beyond the cap the rest of a long utterance is dropped: memory stays bounded.
            room = self._keep_cap - len(self._utterance) // SAMPLE_WIDTH
            if room > 0:
                self._utterance += window[: room * SAMPLE_WIDTH]

    def _follow_onset(self) -> None:
        onset_ms = self.tracker.onset_ms
        if onset_ms is None:
            self._utterance = None  # silent again: nothing pending
            self._utterance_onset = None
            return
        if self._utterance is not None and self._utterance_onset == onset_ms:
            return
        # A new run began in the window just classified: start its audio from the pre-roll.
        first = max(self._sample_at(onset_ms) - self._pre_roll, self._recent_start)
        offset = (first - self._recent_start) * SAMPLE_WIDTH
        self._utterance = bytearray(self._recent[offset : offset + self._keep_cap * SAMPLE_WIDTH])
        self._utterance_start = first
        self._utterance_onset = onset_ms

    def _speech_audio(self, event: SpeechEnded) -> PcmFrame:
        kept = self._utterance or bytearray()
        last = max(self._sample_at(event.end_ms) - self._utterance_start, 0)
        return PcmFrame(bytes(kept[: last * SAMPLE_WIDTH]), self._rate)

    def _sample_at(self, ms: float) -> int:
        return round(ms * self._rate / 1000)

    def _expected(self) -> str:
        return f"expected {FRAME_MS} ms frames of {self._frame_bytes} bytes at {self.input_rate} Hz"
