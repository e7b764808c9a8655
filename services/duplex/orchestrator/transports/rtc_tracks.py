"""Audio tracks of a WebRTC peer: the TTS track out (an `AudioSink`) and the mic track in.

Out: the session hands 20 ms frames to `TtsTrack.send`, already paced by the clock a few
frames ahead; aiortc's RTP sender pulls `recv()` and Opus-encodes at 48 kHz. `recv` keeps its
own clock (frame k is due at start + k * 20 ms, as aiortc's own audio tracks do) and plays
silence when nothing is queued, so the RTP stream never stalls between utterances.

In: aiortc decodes Opus as stereo s16 48 kHz, 960 samples per frame (other codecs at other
rates); `MicDownmixer` turns whatever arrives into exact 20 ms mono 48 kHz frames.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import time
from collections.abc import Awaitable, Callable

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from duplex.audio.frames import PcmFrame, frame_bytes, frame_samples
from duplex.audio.framing import FrameCutter
from duplex.audio.resample import StreamResampler

RTC_RATE = 48000  # Opus's clock; every frame on a track is 20 ms at this rate
RTC_FRAME_SAMPLES = frame_samples(RTC_RATE)
_TIME_BASE = fractions.Fraction(1, RTC_RATE)
_SILENCE = bytes(frame_bytes(RTC_RATE))
# The session keeps at most ~60 ms queued here; this bound is only reached when nobody pulls
# frames (a stalled encoder): the oldest audio goes first, so latency stays bounded.
DEFAULT_MAX_QUEUED_FRAMES = 25
# A recv() this late (the loop stalled, the encoder fell behind) restarts the clock instead of
# bursting out the backlog: the receiver hears a gap, not a run of compressed catch-up audio.
_RESYNC_AFTER_S = 0.1

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TtsTrack(MediaStreamTrack):
    """The outgoing audio track, and the session's `AudioSink` for a WebRTC client.

    `send` resamples to 48 kHz when the session's rate differs (one streaming resampler per
    input rate, so no clicks at frame edges) and queues exact 20 ms frames; `clear` drops the
    queue at once and returns how many frames it dropped. With a resampler in the path the
    count can be off by the one frame soxr holds in its filter.
    """

    kind = "audio"

    def __init__(
        self,
        *,
        max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__()
        if max_queued_frames <= 0:
            raise ValueError(f"max_queued_frames must be positive, got {max_queued_frames}")
        self._queue: collections.deque[bytes] = collections.deque()
        self._max = max_queued_frames
        self._cutter = FrameCutter(RTC_RATE)
        self._resampler: StreamResampler | None = None
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._pts = 0  # samples since the clock (re)started
        self._timestamp = 0  # samples since the first frame: the RTP clock never goes back
        self.frames_played = 0  # frames of session audio handed to the encoder
        self.frames_overflowed = 0  # frames dropped because the queue was full

    @property
    def queued_frames(self) -> int:
        return len(self._queue)

    async def send(self, frame: PcmFrame) -> None:
        if frame.sample_rate == RTC_RATE:
            frames = self._cutter.push(frame.pcm)
        else:
            resampler = self._resampler
            if resampler is None or resampler.in_rate != frame.sample_rate:
                resampler = self._resampler = StreamResampler(frame.sample_rate, RTC_RATE)
            frames = self._cutter.push(resampler.push(frame.pcm))
        self._queue.extend(frames)
        while len(self._queue) > self._max:
            self._queue.popleft()
            self.frames_overflowed += 1

    def clear(self) -> int:
        dropped = len(self._queue)
        self._queue.clear()
        self._cutter.clear()
        if self._resampler is not None:
            self._resampler.flush()  # discard the filter's tail: it belongs to the cut audio
        return dropped

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._pts / RTC_RATE - now
            if wait < -_RESYNC_AFTER_S:
                self._start, self._pts = now, 0
            elif wait > 0:
                await self._sleep(wait)
        if self._queue:
            pcm = self._queue.popleft()
            self.frames_played += 1
        else:
            pcm = _SILENCE
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        out = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        out.sample_rate = RTC_RATE
        out.pts = self._timestamp
        out.time_base = _TIME_BASE
        self._pts += RTC_FRAME_SAMPLES
        self._timestamp += RTC_FRAME_SAMPLES
        return out


class MicFormatError(ValueError):
    """A decoded mic frame in a sample format the downmixer does not take."""


class MicDownmixer:
    """Decoded mic frames (any channel count, s16 packed or planar, any rate) in; exact 20 ms
    mono s16le frames at 48 kHz out."""

    def __init__(self) -> None:
        self._cutter = FrameCutter(RTC_RATE)
        self._resampler: StreamResampler | None = None

    def push(self, frame: av.AudioFrame) -> list[bytes]:
        mono = _mono_s16(frame)
        rate = frame.sample_rate
        if rate != RTC_RATE:
            resampler = self._resampler
            if resampler is None or resampler.in_rate != rate:
                resampler = self._resampler = StreamResampler(rate, RTC_RATE)
            mono = resampler.push(mono)
        return self._cutter.push(mono)


def _mono_s16(frame: av.AudioFrame) -> npt.NDArray[np.int16]:
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    fmt = frame.format.name
    if fmt == "s16":  # packed: one row, channels interleaved
        interleaved = data.reshape(-1, channels)
    elif fmt == "s16p":  # planar: one row per channel
        interleaved = data.T
    else:
        raise MicFormatError(f"mic frames must be s16 or s16p, got {fmt}")
    if channels == 1:
        mono: npt.NDArray[np.int16] = np.ascontiguousarray(interleaved[:, 0], dtype=np.int16)
        return mono
    # The mean of the channels, in int32 so that loud stereo does not wrap.
    total = interleaved.astype(np.int32).sum(axis=1)
    mixed: npt.NDArray[np.int16] = (total // channels).astype(np.int16)
    return mixed


async def read_mic(track: MediaStreamTrack, deliver: Callable[[PcmFrame], Awaitable[None]]) -> None:
    """Pull the remote mic track until it ends; hand each 20 ms 48 kHz mono frame on."""
    downmixer = MicDownmixer()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        for pcm in downmixer.push(frame):
            await deliver(PcmFrame(pcm, RTC_RATE))
