"""WAV encoding and decoding for mono s16 PCM (reference audio, CLI output, tests)."""

from __future__ import annotations

import io
import wave

from duplex.audio.frames import SAMPLE_WIDTH, PcmFrame


class WavError(ValueError):
    """The bytes are not a WAV file this module reads (mono, 16-bit PCM)."""


def encode_wav(pcm: bytes, sample_rate: int) -> bytes:
    """A complete mono s16le WAV file holding ``pcm``."""
    frame = PcmFrame(pcm, sample_rate)  # validates rate and sample alignment
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_WIDTH)
        out.setframerate(frame.sample_rate)
        out.writeframes(frame.pcm)
    return buf.getvalue()


def decode_wav(data: bytes) -> PcmFrame:
    """The PCM of a mono 16-bit WAV file.

    A data chunk shorter than its header claims (streamed WAVs carry a placeholder
    length) is read as far as it goes.
    """
    if not data:
        raise WavError("not a WAV file: no data")
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, RuntimeError) as exc:
        # wave's chunk reader raises a bare RuntimeError when a chunk size points
        # past the end of the data (a corrupt or hostile header).
        raise WavError(f"not a readable PCM WAV file: {str(exc) or type(exc).__name__}") from exc
    if channels != 1:
        raise WavError(f"expected a mono WAV, got {channels} channels")
    if width != SAMPLE_WIDTH:
        raise WavError(f"expected 16-bit samples, got {8 * width}-bit")
    if rate <= 0:
        raise WavError(f"invalid sample rate {rate}")
    return PcmFrame(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH], rate)
