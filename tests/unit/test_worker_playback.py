"""The playback clock: frame due times, lead, PAUSE / RESUME shifts, under-runs once per gap."""

from __future__ import annotations

import pytest
from duplex.worker.playback import PlaybackClock

FRAME = 0.02


def _send(clock: PlaybackClock, now: float, frames: int) -> None:
    for _ in range(frames):
        assert clock.wait_before_next(now) == 0.0
        clock.sent()


def test_frames_leave_at_most_lead_ahead_of_their_play_time() -> None:
    """With 40 ms lead, frames 0-2 go at once; frame 3 waits until 20 ms after the start."""
    clock = PlaybackClock(FRAME, lead_s=0.04)
    _send(clock, 100.0, 3)
    assert clock.wait_before_next(100.0) == pytest.approx(0.02)
    assert clock.wait_before_next(100.015) == pytest.approx(0.005)


def test_zero_lead_never_waits() -> None:
    """lead 0: frames go as fast as they are produced."""
    clock = PlaybackClock(FRAME, lead_s=0.0)
    _send(clock, 5.0, 50)
    assert clock.wait_before_next(5.0) == 0.0


def test_an_idle_clock_restarts_with_the_next_frame() -> None:
    """Once the client played everything, the next frame starts a fresh run (no burst)."""
    clock = PlaybackClock(FRAME, lead_s=0.03)
    _send(clock, 10.0, 2)  # plays until 10.04
    _send(clock, 11.0, 2)  # a second later: these play at 11.00 and 11.02
    assert clock.wait_before_next(11.0) == pytest.approx(0.01)  # 11.04 - lead


def test_pause_shifts_the_clock_by_the_paused_time() -> None:
    """RESUME continues where PAUSE stopped: due times move by the pause's length."""
    clock = PlaybackClock(FRAME, lead_s=0.0)
    _send(clock, 0.0, 10)  # plays until 0.2
    assert clock.pause(0.05) and not clock.pause(0.06)
    assert clock.paused
    assert clock.resume(1.05) and not clock.resume(1.06)
    assert clock.playout_end(1.05, queued_frames=0) == pytest.approx(1.2)


def test_playout_end_counts_sent_and_queued_audio() -> None:
    """The audio sent but not yet played plus the frames still queued."""
    clock = PlaybackClock(FRAME, lead_s=0.0)
    assert clock.playout_end(3.0, queued_frames=5) == pytest.approx(3.1)
    _send(clock, 3.0, 10)
    assert clock.playout_end(3.1, queued_frames=5) == pytest.approx(3.3)
    clock.pause(3.1)
    assert clock.playout_end(3.1, queued_frames=5) == pytest.approx(3.2)  # paused: queued only


def test_an_underrun_is_counted_once_per_gap_and_only_when_audio_is_owed() -> None:
    """The client ran dry while it waited for more: one under-run, until a frame is sent."""
    clock = PlaybackClock(FRAME, lead_s=0.0)
    assert clock.check_underrun(0.0, owed=True) is None  # nothing played yet
    _send(clock, 0.0, 2)  # plays until 0.04
    assert clock.check_underrun(0.01, owed=True) == pytest.approx(0.03)  # check again then
    assert clock.check_underrun(0.05, owed=False) is None and clock.underruns == 0
    assert clock.check_underrun(0.05, owed=True) is None and clock.underruns == 1
    assert clock.check_underrun(0.06, owed=True) is None and clock.underruns == 1
    _send(clock, 0.07, 1)
    assert clock.check_underrun(0.2, owed=True) is None and clock.underruns == 2


def test_no_underrun_while_paused_or_after_reset() -> None:
    """A paused client is not starving; after STOP nothing is playing."""
    clock = PlaybackClock(FRAME, lead_s=0.0)
    _send(clock, 0.0, 1)
    clock.pause(0.01)
    assert clock.check_underrun(1.0, owed=True) is None
    clock.reset()
    assert not clock.paused
    assert clock.check_underrun(2.0, owed=True) is None and clock.underruns == 0


def test_frames_leave_in_groups_when_asked() -> None:
    """lead 100 ms, groups of 3: after the first lead's worth, the clock waits until a frame
    is only 60 ms ahead, then lets it and the next two go at once (one wake per group)."""
    clock = PlaybackClock(FRAME, lead_s=0.1, group=3)
    _send(clock, 10.0, 6)  # frames 0-5 (play 10.00-10.10) go at once: at most 100 ms ahead
    # Frame 6 plays at 10.12: within the lead at 10.02, but a group starts 60 ms ahead.
    assert clock.wait_before_next(10.02) == pytest.approx(0.04)
    _send(clock, 10.06, 3)  # frames 6, 7, 8 (play 10.12-10.16) together
    assert clock.wait_before_next(10.06) == pytest.approx(0.06)  # frame 9: 10.18 - 0.06


def test_groups_of_one_pace_every_frame_as_before() -> None:
    """group 1 is the per-frame clock: each frame goes once it is lead ahead."""
    clock = PlaybackClock(FRAME, lead_s=0.04, group=1)
    _send(clock, 100.0, 3)
    assert clock.wait_before_next(100.0) == pytest.approx(0.02)


def test_a_group_larger_than_the_lead_never_sends_beyond_the_lead() -> None:
    """lead 40 ms, groups of 5: a group starts when its first frame is due, and the rest of
    the group still goes at most 40 ms ahead."""
    clock = PlaybackClock(FRAME, lead_s=0.04, group=5)
    _send(clock, 1.0, 3)  # frames 0-2 (play 1.00-1.04)
    assert clock.wait_before_next(1.0) == pytest.approx(0.02)  # frame 3 plays at 1.06
    _send(clock, 1.04, 2)  # frames 3, 4: the rest of the group
    assert clock.wait_before_next(1.04) == pytest.approx(0.06)  # frame 5 starts a group


def test_group_must_be_positive() -> None:
    with pytest.raises(ValueError, match="group"):
        PlaybackClock(FRAME, lead_s=0.04, group=0)
