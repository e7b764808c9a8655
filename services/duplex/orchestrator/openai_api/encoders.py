"""Streaming encoders for `response_format`: PCM frames in, the format's bytes out as they come.

`pcm` is the raw s16le mono samples (OpenAI sends 24 kHz); `wav` is a WAV header whose
lengths say "unknown" (0xFFFFFFFF, as OpenAI streams it) followed by the same samples; `mp3`,
`opus` (in Ogg), `aac` (ADTS) and `flac` go through PyAV, flushing every packet so that the
first bytes leave with the first frames.
"""

from __future__ import annotations

import struct
from enum import StrEnum
from typing import Protocol

import av
import numpy as np

from duplex.audio.frames import PcmFrame

_UNKNOWN_LENGTH = 0xFFFFFFFF


class ResponseFormat(StrEnum):
    MP3 = "mp3"
    OPUS = "opus"
    AAC = "aac"
    FLAC = "flac"
    WAV = "wav"
    PCM = "pcm"


CONTENT_TYPES = {
    ResponseFormat.MP3: "audio/mpeg",
    ResponseFormat.OPUS: "audio/ogg",
    ResponseFormat.AAC: "audio/aac",
    ResponseFormat.FLAC: "audio/flac",
    ResponseFormat.WAV: "audio/wav",
    ResponseFormat.PCM: "audio/pcm",
}

# format -> (container, codec) for PyAV
_AV_FORMATS = {
    ResponseFormat.MP3: ("mp3", "libmp3lame"),
    ResponseFormat.OPUS: ("ogg", "libopus"),
    ResponseFormat.AAC: ("adts", "aac"),
    ResponseFormat.FLAC: ("flac", "flac"),
}


class Encoder(Protocol):
    """Bytes for each frame (maybe none yet), then the rest at the end."""

    def encode(self, frame: PcmFrame) -> bytes: ...

    def finish(self) -> bytes: ...


def available_formats() -> tuple[ResponseFormat, ...]:
    """The formats this build can produce (PyAV's codecs decide the compressed ones)."""
    codecs = av.codecs_available
    return tuple(f for f in ResponseFormat if f not in _AV_FORMATS or _AV_FORMATS[f][1] in codecs)


def make_encoder(fmt: ResponseFormat, sample_rate: int) -> Encoder:
    if fmt is ResponseFormat.PCM:
        return _PcmEncoder()
    if fmt is ResponseFormat.WAV:
        return _WavEncoder(sample_rate)
    container, codec = _AV_FORMATS[fmt]
    return _AvEncoder(container, codec, sample_rate)


class _PcmEncoder:
    def encode(self, frame: PcmFrame) -> bytes:
        return frame.pcm

    def finish(self) -> bytes:
        return b""


class _WavEncoder:
    def __init__(self, sample_rate: int) -> None:
        self._header: bytes | None = wav_stream_header(sample_rate)

    def encode(self, frame: PcmFrame) -> bytes:
        header, self._header = self._header or b"", None
        return header + frame.pcm

    def finish(self) -> bytes:
        return self._header or b""  # a text with no audio is still a (empty) WAV file


def wav_stream_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A RIFF/WAVE header for a stream of unknown length."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", _UNKNOWN_LENGTH)
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", _UNKNOWN_LENGTH)
    )


class _Collector:
    """The file object PyAV writes the container into."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


class _AvEncoder:
    def __init__(self, container: str, codec: str, sample_rate: int) -> None:
        self._rate = sample_rate
        self._out = _Collector()
        options = {"flush_packets": "1"}
        if container == "ogg":
            options["page_duration"] = "20000"  # µs: a page per packet, not one a second
        self._container = av.open(
            self._out, mode="w", format=container, buffer_size=1024, options=options
        )
        stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        self._stream = stream
        self._pts = 0
        self._closed = False

    def encode(self, frame: PcmFrame) -> bytes:
        samples = np.frombuffer(frame.pcm, dtype="<i2").reshape(1, -1)
        av_frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        av_frame.sample_rate = self._rate
        av_frame.pts = self._pts
        self._pts += samples.shape[1]
        for packet in self._stream.encode(av_frame):
            self._container.mux(packet)
        return self._out.take()

    def finish(self) -> bytes:
        if not self._closed:
            self._closed = True
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._out.take()

    def close(self) -> None:
        """Release the codec without finishing (the client went away)."""
        if not self._closed:
            self._closed = True
            self._container.close()
