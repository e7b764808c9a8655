"""A WebSocket test client that also records when each audio frame arrived, and the gaps."""

from __future__ import annotations

import itertools
import json
import time

from websockets.exceptions import ConnectionClosed

from tests.integration.orchestrator_fixtures import FRAME_MS, Client


class TimedClient(Client):
    """`Client` with the arrival time of every binary frame (`frame_times`, monotonic)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.frame_times: list[float] = []
        self.message_times: list[tuple[float, str]] = []
        self.closed_abruptly: ConnectionClosed | None = None

    async def __aenter__(self) -> TimedClient:
        await super().__aenter__()
        return self

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                now = time.monotonic()
                if isinstance(raw, bytes):
                    self.frame_times.append(now)
                    self.got.frame_sizes.add(len(raw))
                    utt = self.got.utterance(self.got.current)
                    if utt.first_frame_at is None:
                        utt.first_frame_at = now
                    utt.frames.append(raw)
                else:
                    message = json.loads(raw)
                    self.message_times.append((now, message["type"]))
                    self.got.messages.append(message)
                    current = self.got.utterance(self.got.current)
                    current.marks.setdefault(message["type"], len(current.frames))
                    if message["type"] == "AudioEnd":
                        self.got.utterance(int(message["utterance"])).ended_at = now
                        self.got.current = int(message["utterance"]) + 1
                self._changed.set()
        except ConnectionClosed as exc:
            self.closed_abruptly = exc  # no close frame: the server process died
        finally:
            self.closed = True
            self._changed.set()


def worst_gap_ms(times: list[float], *, after: float | None = None) -> float:
    """The longest interval between consecutive frames (ms), over frames after ``after``."""
    picked = [t for t in times if after is None or t >= after]
    if len(picked) < 2:
        return 0.0
    return round(max(b - a for a, b in itertools.pairwise(picked)) * 1000, 1)


def underrun_ms(times: list[float], *, lead_ms: float = 0.0) -> float:
    """Silence a listener hears: how far the arrivals fall behind real-time playback that
    started with the first frame and ``lead_ms`` of buffer (0 when never behind)."""
    if not times:
        return 0.0
    start = times[0] + lead_ms / 1000
    behind = 0.0
    for k, t in enumerate(times):
        due = start + k * FRAME_MS / 1000 + behind
        behind += max(0.0, t - due)
    return round(behind * 1000, 1)
