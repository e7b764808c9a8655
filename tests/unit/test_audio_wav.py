"""WAV encode/decode."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from duplex.audio import PcmFrame, WavError, decode_wav, encode_wav
from hypothesis import given, settings
from hypothesis import strategies as st


def _wav(channels: int, width: int, rate: int, nframes: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes(channels * width * nframes))
    return buf.getvalue()


def test_round_trip_keeps_samples_and_rate() -> None:
    """encode_wav then decode_wav gives the same PCM and rate."""
    pcm = np.arange(-500, 500, dtype=np.int16).tobytes()
    data = encode_wav(pcm, 24000)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert decode_wav(data) == PcmFrame(pcm, 24000)


def test_empty_audio_round_trips() -> None:
    """A WAV with no samples is valid."""
    assert decode_wav(encode_wav(b"", 16000)) == PcmFrame(b"", 16000)


def test_stereo_is_rejected() -> None:
    """Only mono is accepted, and the error says what was found."""
    with pytest.raises(WavError, match="2 channels"):
        decode_wav(_wav(2, 2, 16000, 10))


def test_8_bit_is_rejected() -> None:
    """Only 16-bit samples are accepted."""
    with pytest.raises(WavError, match="8-bit"):
        decode_wav(_wav(1, 1, 16000, 10))


@pytest.mark.parametrize("data", [b"", b"hello", b"RIFF\x00\x00\x00\x00WAVE", b"\x00" * 64])
def test_garbage_is_a_wav_error(data: bytes) -> None:
    """Bytes that are not a WAV file raise WavError, not a library exception."""
    with pytest.raises(WavError):
        decode_wav(data)


def test_truncated_data_is_read_as_far_as_it_goes() -> None:
    """A streamed WAV whose data is shorter than its header claims still decodes."""
    data = encode_wav(np.arange(100, dtype=np.int16).tobytes(), 16000)
    frame = decode_wav(data[:-51])  # cut mid-sample too
    assert frame.samples == 74
    assert frame.array().tolist() == list(range(74))


def test_encode_rejects_half_samples() -> None:
    """PCM with an odd byte count cannot be encoded."""
    with pytest.raises(ValueError, match="even number"):
        encode_wav(b"\x00", 16000)


def test_chunk_size_past_the_end_is_a_wav_error() -> None:
    """A corrupt chunk size (which makes wave raise a bare RuntimeError) is a WavError."""
    data = bytearray(encode_wav(bytes(200), 16000))
    data[36:44] = b"d\xffta\xc8\x00a\x00"  # unknown chunk whose size runs past the end
    with pytest.raises(WavError, match="not a readable PCM WAV file: RuntimeError"):
        decode_wav(bytes(data))


_VALID = encode_wav(bytes(200), 16000)


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4
    ),
    keep=st.integers(0, len(_VALID)),
)
def test_corrupted_wav_raises_only_wav_error(edits: list[tuple[int, int]], keep: int) -> None:
    """A valid WAV with bytes changed or cut off either decodes or raises WavError."""
    data = bytearray(_VALID)
    for pos, value in edits:
        data[pos % 44 if pos % 2 else pos] = value  # mostly the header
    try:
        frame = decode_wav(bytes(data[:keep]))
    except WavError:
        return
    assert len(frame.pcm) % 2 == 0


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), header=st.booleans())
def test_decode_raises_only_wav_error(data: bytes, header: bool) -> None:
    """Any bytes either decode to mono s16 PCM or raise WavError."""
    if header:
        data = b"RIFF" + len(data).to_bytes(4, "little") + b"WAVEfmt " + data
    try:
        frame = decode_wav(data)
    except WavError:
        return
    assert frame.sample_rate > 0
    assert len(frame.pcm) % 2 == 0
