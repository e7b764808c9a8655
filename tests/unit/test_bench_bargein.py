"""The barge-in benchmark's pure parts (bench/bargein_latency.py, bench/rtc_client.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.bargein_latency import (
    CUT,
    DETECT,
    LEAD_SILENCE_MS,
    Run,
    histogram_sums,
    mic_frames,
    one_observation,
    summaries,
)
from bench.rtc_client import SILENT_PEAK, Recorder, peak

EXPOSITION = f"""\
# HELP {DETECT} Barge-in, speech onset to the VAD's decision.
# TYPE {DETECT} histogram
{DETECT}_bucket{{le="0.1",transport="websocket"}} 2.0
{DETECT}_bucket{{le="+Inf",transport="websocket"}} 2.0
{DETECT}_count{{transport="websocket"}} 2.0
{DETECT}_sum{{transport="websocket"}} 0.2
{DETECT}_bucket{{le="0.1",transport="webrtc"}} 0.0
{DETECT}_bucket{{le="+Inf",transport="webrtc"}} 1.0
{DETECT}_count{{transport="webrtc"}} 1.0
{DETECT}_sum{{transport="webrtc"}} 0.12
"""


def test_histogram_sums_reads_sum_and_count_per_transport() -> None:
    """Each transport's _sum and _count are read; other histograms are not mixed in."""
    sums = histogram_sums(EXPOSITION, DETECT)
    assert sums.keys() == {"websocket", "webrtc"}
    assert sums["websocket"] == pytest.approx((0.2, 2.0))
    assert sums["webrtc"] == pytest.approx((0.12, 1.0))
    assert histogram_sums(EXPOSITION.encode(), CUT) == {}


def test_one_observation_is_the_sum_change_when_exactly_one_was_observed() -> None:
    """One new observation: its value exactly; none, or two mixed together: NaN."""
    before = {"webrtc": (0.12, 1.0)}
    assert one_observation(before, {"webrtc": (0.225, 2.0)}, "webrtc") == pytest.approx(0.105)
    assert one_observation({}, {"webrtc": (0.12, 1.0)}, "webrtc") == pytest.approx(0.12)
    assert math.isnan(one_observation(before, before, "webrtc"))
    assert math.isnan(one_observation(before, {"webrtc": (0.4, 3.0)}, "webrtc"))


def test_mic_frames_put_the_first_speech_sample_at_the_start_of_the_marked_frame() -> None:
    """Silence, then speech from the first sample of frame `mark`; 20 ms frames, padded."""
    speech = np.full(1000, 5000, dtype=np.int16)
    frames, mark = mic_frames(speech, 48000)
    assert mark == LEAD_SILENCE_MS // 20
    assert all(len(f) == 960 * 2 for f in frames)
    assert all(peak(f) == 0 for f in frames[:mark])
    first = np.frombuffer(frames[mark], dtype="<i2")
    assert first[0] == 5000 and len(frames) == mark + 2


def test_recorder_finds_voiced_frames_and_the_silent_tail() -> None:
    """Frames louder than the threshold are voice; the tail counts trailing quiet frames."""
    got = Recorder()
    for t, p in ((1.0, 9000), (1.02, SILENT_PEAK + 1), (1.04, SILENT_PEAK), (1.06, 0)):
        got.add_frame(t, p)
    assert got.voiced() == [1.0, 1.02]
    assert got.voiced(after=1.0) == [1.02]
    assert got.silent_tail() == 2


def test_summaries_skip_missing_parts_per_transport() -> None:
    """A part a run did not see (NaN) is left out of that transport's percentiles."""
    runs = [
        Run("webrtc", 100.0, 0.5, 100.5, 200.0, 300.0, 90.0),
        Run("webrtc", 120.0, math.nan, 120.5, 220.0, 320.0, 95.0),
        Run("websocket", 100.0, 0.7, 100.7, 101.0, 100.6, -0.4),
    ]
    out = summaries(runs)
    assert out["webrtc"]["server_detect_ms"]["n"] == 2
    assert out["webrtc"]["server_detect_ms"]["p50"] == pytest.approx(110.0)
    assert out["webrtc"]["server_cut_ms"]["n"] == 1
    assert out["websocket"]["client_detect_ms"]["p50"] == pytest.approx(101.0)
