"""MicInput: frame validation, random bytes, exact audio times, the kept speech audio."""

from __future__ import annotations

import numpy as np
import pytest
from duplex.audio import (
    PcmFrame,
    SileroModel,
    SpeechEnded,
    SpeechEvent,
    SpeechStarted,
    SpeechTracker,
    frame_bytes,
    make_vad,
)
from duplex.audio.mic import MicFrameError, MicInput


class LoudnessVad:
    """A fake detector: a window is speech when its RMS is above ~-30 dBFS."""

    sample_rate = 16000

    def __init__(self, frame_samples: int = 320) -> None:
        self.frame_samples = frame_samples
        self.resets = 0

    def is_speech(self, pcm: bytes) -> bool:
        assert len(pcm) == self.frame_samples * 2
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        return bool(np.sqrt(np.mean(samples**2)) > 1000)

    def reset(self) -> None:
        self.resets += 1


def _tone(rate: int, seconds: float, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * 300 * t)).astype(np.int16)


def _silence(rate: int, seconds: float) -> np.ndarray:
    return np.zeros(round(rate * seconds), dtype=np.int16)


def _push_all(mic: MicInput, audio: np.ndarray) -> list[SpeechEvent]:
    size = frame_bytes(mic.input_rate)
    pcm = audio.astype("<i2").tobytes()
    pcm += bytes(-len(pcm) % size)
    events: list[SpeechEvent] = []
    for i in range(0, len(pcm), size):
        events += mic.push(PcmFrame(pcm[i : i + size], mic.input_rate))
    return events


def _mic(rate: int = 16000, window: int = 320, *, keep_audio_s: float = 30.0) -> MicInput:
    """A mic with the fake detector, min_speech 100 ms, min_silence 200 ms, pre-roll 300 ms."""
    tracker = SpeechTracker(100, 200)
    return MicInput(rate, LoudnessVad(window), tracker, keep_audio_s=keep_audio_s)


@pytest.fixture(scope="module")
def silero_model() -> SileroModel:
    """One loaded silero model for the module."""
    return SileroModel()


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_unsupported_input_rate_is_refused_at_construction(rate: int) -> None:
    """Only 16, 24 and 48 kHz mic streams are accepted, and the error lists them."""
    with pytest.raises(MicFrameError, match="16000, 24000, 48000"):
        _mic(rate)


def test_wrong_frame_size_names_expected_and_got() -> None:
    """A frame that is not one 20 ms frame is a MicFrameError with both sizes in it."""
    mic = _mic(16000)
    with pytest.raises(
        MicFrameError, match="expected 20 ms frames of 640 bytes at 16000 Hz, got 1000 bytes"
    ):
        mic.push(PcmFrame(bytes(1000), 16000))


def test_wrong_frame_rate_names_expected_and_got() -> None:
    """A frame at another rate is refused even when its byte length would fit."""
    mic = _mic(48000)
    with pytest.raises(MicFrameError, match=r"1920 bytes at 48000 Hz, got a frame at 24000 Hz"):
        mic.push(PcmFrame(bytes(1920), 24000))


def test_mic_frame_error_is_a_value_error() -> None:
    """Callers that catch ValueError for bad input catch MicFrameError too."""
    assert issubclass(MicFrameError, ValueError)


def test_a_refused_frame_leaves_the_stream_usable() -> None:
    """After a bad frame, good frames are still taken and times are not disturbed."""
    mic = _mic(24000)
    with pytest.raises(MicFrameError):
        mic.push(PcmFrame(bytes(100), 24000))
    assert mic.audio_ms == 0
    _push_all(mic, _silence(24000, 0.2))
    assert mic.audio_ms == pytest.approx(200.0)


@pytest.mark.parametrize("engine", ["webrtc", "silero"])
@pytest.mark.parametrize("rate", [16000, 48000])
def test_a_megabyte_of_random_bytes_does_not_crash(
    engine: str, rate: int, silero_model: SileroModel
) -> None:
    """1 MB of random bytes as right-sized frames: no exception, whatever the VAD decides,
    and the events that come out alternate start, end, start..."""
    vad = make_vad(engine, aggressiveness=3, threshold=0.5, silero_model=silero_model)
    mic = MicInput(rate, vad, SpeechTracker(100, 200))
    noise = np.random.default_rng(7).bytes(1 << 20)
    size = frame_bytes(rate)
    events: list[SpeechEvent] = []
    for i in range(0, len(noise) - size + 1, size):
        events += mic.push(PcmFrame(noise[i : i + size], rate))
    assert mic.audio_ms == pytest.approx((len(noise) // size) * 20.0)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechEnded] * (len(kinds) // 2) + [SpeechStarted] * (
        len(kinds) % 2
    )


@pytest.mark.parametrize("engine", ["webrtc", "silero"])
def test_silence_gives_no_event(engine: str, silero_model: SileroModel) -> None:
    """Three seconds of digital silence decide nothing with either real engine."""
    vad = make_vad(engine, aggressiveness=2, threshold=0.5, silero_model=silero_model)
    mic = MicInput(48000, vad, SpeechTracker(100, 200))
    assert _push_all(mic, _silence(48000, 3.0)) == []
    assert mic.audio_ms == pytest.approx(3000.0)


@pytest.mark.parametrize(("rate", "window"), [(16000, 320), (24000, 512), (48000, 320)])
def test_events_carry_exact_audio_times(rate: int, window: int) -> None:
    """1 s silence, 0.5 s loud, 1 s silence: onset at 1000 ms, decided min_speech later,
    end at 1500 ms, to within one VAD window (times are counted in samples)."""
    mic = _mic(rate, window)
    audio = np.concatenate([_silence(rate, 1.0), _tone(rate, 0.5), _silence(rate, 1.0)])
    events = _push_all(mic, audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    window_ms = window / 16
    assert abs(started.onset_ms - 1000) <= window_ms
    assert 100 <= started.decided_ms - started.onset_ms < 100 + window_ms
    assert ended.onset_ms == started.onset_ms
    assert abs(ended.end_ms - 1500) <= window_ms


def test_speech_ended_carries_the_speech_with_its_pre_roll() -> None:
    """The kept audio is 16 kHz, runs from 300 ms before the onset to where silence began,
    and its loud part is where the tone was."""
    mic = _mic(48000)
    audio = np.concatenate([_silence(48000, 1.0), _tone(48000, 0.5), _silence(48000, 1.0)])
    ended = _push_all(mic, audio)[-1]
    assert isinstance(ended, SpeechEnded) and ended.audio is not None
    assert ended.audio.sample_rate == 16000
    assert ended.audio.duration_ms == pytest.approx(ended.end_ms - ended.onset_ms + 300)
    samples = ended.audio.array().astype(np.float64)
    assert np.abs(samples[: 16 * 280]).max() < 100  # the pre-roll: silence before the onset
    assert np.sqrt(np.mean(samples[16 * 320 : 16 * 780] ** 2)) > 4000  # the tone


def test_pre_roll_stops_at_the_start_of_the_stream() -> None:
    """Speech from the first sample: the audio starts at 0, no invented pre-roll."""
    mic = _mic(16000)
    ended = _push_all(mic, np.concatenate([_tone(16000, 0.4), _silence(16000, 0.5)]))[-1]
    assert isinstance(ended, SpeechEnded) and ended.audio is not None
    assert ended.onset_ms == 0
    assert ended.audio.duration_ms == pytest.approx(ended.end_ms)


def test_kept_audio_is_bounded_by_keep_audio_s() -> None:
    """Two seconds of speech with keep_audio_s=0.5: the first half second (pre-roll first)."""
    mic = _mic(16000, keep_audio_s=0.5)
    audio = np.concatenate([_silence(16000, 1.0), _tone(16000, 2.0), _silence(16000, 0.5)])
    ended = _push_all(mic, audio)[-1]
    assert isinstance(ended, SpeechEnded) and ended.audio is not None
    assert ended.audio.duration_ms == pytest.approx(500.0)
    assert np.abs(ended.audio.array()[: 16 * 280]).max() < 100


def test_a_blip_gives_no_event_and_the_next_speech_has_its_own_pre_roll() -> None:
    """A 60 ms blip (below min_speech) is ignored; the speech after it is reported with the
    audio before its own onset, which holds the blip."""
    mic = _mic(16000)
    audio = np.concatenate(
        [
            _silence(16000, 0.5),
            _tone(16000, 0.06),
            _silence(16000, 0.14),
            _tone(16000, 0.4),
            _silence(16000, 0.5),
        ]
    )
    events = _push_all(mic, audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    assert abs(events[0].onset_ms - 700) <= 20
    ended = events[1]
    assert isinstance(ended, SpeechEnded) and ended.audio is not None
    blip = ended.audio.array()[: 16 * 300].astype(np.float64)
    assert np.abs(blip).max() > 4000


def test_two_utterances_each_get_their_audio() -> None:
    """Each SpeechEnded carries only its own utterance."""
    mic = _mic(24000)
    one = np.concatenate([_silence(24000, 0.5), _tone(24000, 0.3), _silence(24000, 0.5)])
    two = np.concatenate([_tone(24000, 0.6), _silence(24000, 0.5)])
    events = _push_all(mic, np.concatenate([one, two]))
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 2
    durations = [e.audio.duration_ms for e in ended if e.audio is not None]
    assert durations == [pytest.approx(e.end_ms - e.onset_ms + 300) for e in ended]
    assert durations[1] > durations[0]
