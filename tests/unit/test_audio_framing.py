"""FrameCutter: exact frames out of any chunking."""

from __future__ import annotations

import numpy as np
import pytest
from duplex.audio import FrameCutter
from hypothesis import given, settings
from hypothesis import strategies as st


def test_frames_are_exactly_960_samples_at_48k() -> None:
    """A 20 ms frame at 48 kHz is 1920 bytes; leftovers wait for more audio."""
    cutter = FrameCutter(48000)
    frames = cutter.push(np.ones(2500, dtype=np.int16))
    assert [len(f) for f in frames] == [1920, 1920]
    assert cutter.pending_bytes == (2500 - 1920) * 2


def test_frames_are_exactly_320_samples_at_16k() -> None:
    """A 20 ms frame at 16 kHz is 640 bytes."""
    cutter = FrameCutter(16000)
    assert [len(f) for f in cutter.push(np.zeros(960, dtype=np.int16))] == [640, 640, 640]
    assert cutter.flush() is None


def test_flush_zero_pads_the_last_frame() -> None:
    """The partial frame at the end comes out whole, padded with silence."""
    cutter = FrameCutter(16000)
    assert cutter.push(np.full(100, 7, dtype=np.int16)) == []
    last = cutter.flush()
    assert last is not None
    samples = np.frombuffer(last, dtype="<i2")
    assert len(samples) == 320
    assert (samples[:100] == 7).all() and (samples[100:] == 0).all()
    assert cutter.flush() is None


def test_clear_drops_held_audio() -> None:
    """After clear() nothing is held back."""
    cutter = FrameCutter(16000)
    cutter.push(b"\x01\x00" * 10)
    cutter.clear()
    assert cutter.flush() is None


def test_non_int16_input_is_rejected() -> None:
    """Float samples are a caller bug."""
    with pytest.raises(TypeError, match="int16"):
        FrameCutter(16000).push(np.zeros(10, dtype=np.float64))  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
    as_bytes=st.booleans(),
)
def test_any_chunking_gives_the_same_frames(sizes: list[int], as_bytes: bool) -> None:
    """Frames joined back (padding removed) are the input, whatever the chunk sizes."""
    signal = np.arange(sum(sizes), dtype=np.int64).astype(np.int16)
    cutter = FrameCutter(24000)
    frames: list[bytes] = []
    i = 0
    for size in sizes:
        chunk = signal[i : i + size]
        frames.extend(cutter.push(chunk.tobytes() if as_bytes else chunk))
        i += size
    last = cutter.flush()
    if last is not None:
        frames.append(last)
    assert all(len(f) == 960 for f in frames)
    joined = b"".join(frames)
    assert joined[: signal.nbytes] == signal.tobytes()
    assert len(joined) - signal.nbytes < 960
