"""A session's playback clock: when each frame is due, PAUSE / RESUME, and under-runs.

Frame k of the session plays at the client at ``base + k * frame``. The clock never runs
ahead of the audio sent: when the client has played everything (``now`` is past the end of
the audio sent), ``base`` moves forward so the next frame starts a fresh run. A PAUSE shifts
``base`` by the paused time, so RESUME continues exactly where the audio stopped. Frames are
sent ``lead`` ahead of their play time, never earlier.

With ``group`` > 1 frames leave in groups: the first frame of a group waits until it is
only ``lead - (group - 1) * frame`` ahead of its play time, and the next ``group - 1``
frames may follow at once (each still at most ``lead`` ahead). The session then wakes once
per group instead of once per frame, and the client never holds less than that smaller
lead. A worker that sends several frames per message asks for groups of that size.
"""

from __future__ import annotations


class PlaybackClock:
    """The client's playback position as the session computes it (event loop only)."""

    def __init__(self, frame_s: float, lead_s: float, group: int = 1) -> None:
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        self.frame_s = frame_s
        self.lead_s = lead_s
        # How far ahead of its play time the first frame of a group goes.
        self._group_lead_s = max(0.0, lead_s - (group - 1) * frame_s)
        self._group = group
        self._group_until = 0  # frames before this index may follow the group's first
        self.underruns = 0
        self._base: float | None = None  # None: nothing playing, the next frame restarts
        self._frames = 0  # frames sent since start; frame k plays at base + k * frame_s
        self._paused_at: float | None = None
        self._gap_counted = False

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def pause(self, now: float) -> bool:
        """Stop the clock at `now`; False if it was already paused."""
        if self._paused_at is not None:
            return False
        self._paused_at = now
        return True

    def resume(self, now: float) -> bool:
        """Restart the clock, shifted by the time paused; False if it was not paused."""
        if self._paused_at is None:
            return False
        if self._base is not None:
            self._base += now - self._paused_at
        self._paused_at = None
        return True

    def reset(self) -> None:
        """Not paused, nothing playing (STOP: the client drops what it had buffered)."""
        self._paused_at = None
        self._base = None

    def wait_before_next(self, now: float) -> float:
        """Seconds until the next frame may be sent (0: now), restarting an idle clock."""
        if self._base is None or now > self._played_until():
            # Nothing left to play at the client: the clock restarts with this frame.
            self._base = now - self._frames * self.frame_s
        if self.lead_s <= 0:
            return 0.0
        in_group = self._frames < self._group_until  # follows the group released last
        due = self._played_until() - (self.lead_s if in_group else self._group_lead_s)
        if due > now:
            return due - now
        if not in_group:
            self._group_until = self._frames + self._group
        return 0.0

    def sent(self) -> None:
        """One more frame went out."""
        self._frames += 1
        self._gap_counted = False

    def check_underrun(self, now: float, owed: bool) -> float | None:
        """Count an under-run once per gap in audio that is `owed` (the client is waiting).

        Returns how long until the client runs dry (the next check), or None when there is
        nothing to watch.
        """
        if not owed or self._paused_at is not None or self._gap_counted or self._base is None:
            return None
        dry_at = self._played_until()
        if now < dry_at:
            return dry_at - now
        self._gap_counted = True
        self.underruns += 1
        return None

    def playout_end(self, now: float, queued_frames: int) -> float:
        """When the audio sent and the `queued_frames` not yet sent will have played."""
        ahead = 0.0
        if self._base is not None and self._paused_at is None:
            ahead = max(0.0, self._played_until() - now)
        return now + ahead + queued_frames * self.frame_s

    def _played_until(self) -> float:
        assert self._base is not None
        return self._base + self._frames * self.frame_s
