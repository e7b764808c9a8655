"""The WebRTC audio tracks: the TTS track's clock, queue and clear(); the mic downmixer."""

from __future__ import annotations

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from duplex.audio.frames import PcmFrame
from duplex.orchestrator.transports.rtc_tracks import (
    RTC_FRAME_SAMPLES,
    MicDownmixer,
    MicFormatError,
    TtsTrack,
)

FRAME_BYTES = RTC_FRAME_SAMPLES * 2


class FakeClock:
    """A monotonic clock that only moves when the track sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def numbered(n: int, rate: int = 48000) -> PcmFrame:
    """A 20 ms frame whose every sample is `n`."""
    samples = rate // 50
    return PcmFrame(np.full(samples, n, dtype="<i2").tobytes(), rate)


def value(frame: av.AudioFrame) -> int:
    data = frame.to_ndarray()
    assert data.shape == (1, RTC_FRAME_SAMPLES)
    assert (data == data[0, 0]).all()
    return int(data[0, 0])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def track_with(clock: FakeClock, **kw: int) -> TtsTrack:
    return TtsTrack(clock=clock, sleep=clock.sleep, **kw)


async def test_recv_emits_one_20ms_frame_every_20ms_by_the_clock(clock: FakeClock) -> None:
    """Frame k is due at start + k * 20 ms; pts counts 48 kHz samples."""
    track = track_with(clock)
    start = clock.now
    frames = [await track.recv() for _ in range(5)]
    assert [f.pts for f in frames] == [0, 960, 1920, 2880, 3840]
    assert all(f.sample_rate == 48000 and f.samples == 960 for f in frames)
    assert all(f.format.name == "s16" and f.layout.name == "mono" for f in frames)
    assert clock.now == pytest.approx(start + 4 * 0.02)


async def test_a_recv_that_comes_late_does_not_wait(clock: FakeClock) -> None:
    """Behind by less than the resync limit, frames go out at once to catch up."""
    track = track_with(clock)
    await track.recv()
    clock.now += 0.05  # the encoder was 30 ms late
    await track.recv()
    await track.recv()
    assert clock.sleeps == []


async def test_a_long_stall_restarts_the_clock_instead_of_bursting(clock: FakeClock) -> None:
    """After a stall the next frames are paced from now; pts keeps counting forward."""
    track = track_with(clock)
    await track.recv()
    clock.now += 1.0
    late = await track.recv()
    after = await track.recv()
    assert clock.sleeps == [pytest.approx(0.02)]
    assert (late.pts, after.pts) == (960, 1920)


async def test_silence_when_nothing_is_queued_then_frames_in_order(clock: FakeClock) -> None:
    track = track_with(clock)
    assert value(await track.recv()) == 0
    for n in (1, 2, 3):
        await track.send(numbered(n))
    assert [value(await track.recv()) for _ in range(4)] == [1, 2, 3, 0]
    assert track.frames_played == 3


async def test_clear_drops_the_queue_at_once_and_says_how_many(clock: FakeClock) -> None:
    track = track_with(clock)
    for n in (1, 2, 3, 4):
        await track.send(numbered(n))
    assert value(await track.recv()) == 1
    assert track.clear() == 3
    assert track.queued_frames == 0
    assert value(await track.recv()) == 0
    await track.send(numbered(9))
    assert value(await track.recv()) == 9
    assert track.clear() == 0


async def test_a_full_queue_drops_its_oldest_frames(clock: FakeClock) -> None:
    track = track_with(clock, max_queued_frames=3)
    for n in range(1, 6):
        await track.send(numbered(n))
    assert track.frames_overflowed == 2
    assert [value(await track.recv()) for _ in range(3)] == [3, 4, 5]


async def test_odd_sized_input_is_recut_into_exact_20ms_frames(clock: FakeClock) -> None:
    """Two 30 ms pieces are three 20 ms frames."""
    track = track_with(clock)
    piece = np.arange(1440, dtype="<i2").tobytes()
    await track.send(PcmFrame(piece, 48000))
    await track.send(PcmFrame(piece, 48000))
    assert track.queued_frames == 3
    first = (await track.recv()).to_ndarray()[0]
    assert list(first[:3]) == [0, 1, 2]


async def test_24khz_session_audio_is_resampled_to_48khz_frames(clock: FakeClock) -> None:
    """One second at 24 kHz gives about 50 frames at 48 kHz, and the tone survives."""
    track = track_with(clock, max_queued_frames=100)
    t = np.arange(24000) / 24000
    pcm = (np.sin(2 * np.pi * 440 * t) * 10000).astype("<i2")
    for i in range(50):
        await track.send(PcmFrame(pcm[i * 480 : (i + 1) * 480].tobytes(), 24000))
    assert 48 <= track.queued_frames <= 50
    out = np.concatenate([(await track.recv()).to_ndarray()[0] for _ in range(40)])
    assert 9000 < np.abs(out[4800:]).max() <= 10100


async def test_clear_resets_the_resampler_so_no_old_audio_leaks(clock: FakeClock) -> None:
    track = track_with(clock)
    loud = np.full(480, 20000, dtype="<i2").tobytes()
    for _ in range(5):
        await track.send(PcmFrame(loud, 24000))
    track.clear()
    quiet = bytes(480 * 2)
    for _ in range(5):
        await track.send(PcmFrame(quiet, 24000))
    out = np.concatenate([(await track.recv()).to_ndarray()[0] for _ in range(track.queued_frames)])
    assert np.abs(out).max() < 50


async def test_a_stopped_track_raises_media_stream_error(clock: FakeClock) -> None:
    track = track_with(clock)
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


# ---------------------------------------------------------------- mic downmixer


def stereo_frame(left: np.ndarray, right: np.ndarray, rate: int = 48000) -> av.AudioFrame:
    interleaved = np.empty(left.size * 2, dtype="<i2")
    interleaved[0::2] = left
    interleaved[1::2] = right
    frame = av.AudioFrame.from_ndarray(interleaved.reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate = rate
    return frame


def test_decoded_stereo_is_downmixed_to_the_mean_of_its_channels() -> None:
    left = np.full(960, 1000, dtype="<i2")
    right = np.full(960, 3000, dtype="<i2")
    out = MicDownmixer().push(stereo_frame(left, right))
    assert len(out) == 1 and len(out[0]) == FRAME_BYTES
    assert set(np.frombuffer(out[0], dtype="<i2")) == {2000}


def test_loud_stereo_does_not_wrap_around() -> None:
    loud = np.full(960, 32767, dtype="<i2")
    out = MicDownmixer().push(stereo_frame(loud, loud))
    assert set(np.frombuffer(out[0], dtype="<i2")) == {32767}


def test_frames_of_other_sizes_are_recut_to_exact_20ms() -> None:
    """Three 15 ms frames (720 samples) give two 20 ms frames and keep 5 ms back."""
    mixer = MicDownmixer()
    ramp = np.arange(2160, dtype="<i2")
    outs = []
    for i in range(3):
        piece = ramp[i * 720 : (i + 1) * 720]
        outs += mixer.push(stereo_frame(piece, piece))
    assert [len(o) for o in outs] == [FRAME_BYTES, FRAME_BYTES]
    joined = np.frombuffer(b"".join(outs), dtype="<i2")
    assert (joined == ramp[:1920]).all()


def test_planar_and_mono_frames_are_taken_too() -> None:
    planar = av.AudioFrame.from_ndarray(
        np.stack([np.full(960, 100, dtype="<i2"), np.full(960, 300, dtype="<i2")]),
        format="s16p",
        layout="stereo",
    )
    planar.sample_rate = 48000
    mono = av.AudioFrame.from_ndarray(
        np.full((1, 960), 7, dtype="<i2"), format="s16", layout="mono"
    )
    mono.sample_rate = 48000
    mixer = MicDownmixer()
    assert set(np.frombuffer(mixer.push(planar)[0], dtype="<i2")) == {200}
    assert set(np.frombuffer(mixer.push(mono)[0], dtype="<i2")) == {7}


def test_an_8khz_codec_is_resampled_to_48khz() -> None:
    """PCMU decodes at 8 kHz mono: one second in is up to 50 frames at 48 kHz out (less the
    resampler's filter delay, held back until more audio comes)."""
    mixer = MicDownmixer()
    outs: list[bytes] = []
    for _ in range(50):
        frame = av.AudioFrame.from_ndarray(
            np.full((1, 160), 1000, dtype="<i2"), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        outs += mixer.push(frame)
    assert 40 <= len(outs) <= 50
    assert {len(o) for o in outs} == {FRAME_BYTES}


def test_a_float_mic_frame_is_refused_with_a_clear_error() -> None:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), dtype=np.float32), format="flt")
    frame.sample_rate = 48000
    with pytest.raises(MicFormatError, match="s16"):
        MicDownmixer().push(frame)
