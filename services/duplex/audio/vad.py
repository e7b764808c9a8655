"""Voice activity detection on single PCM frames."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import webrtcvad

from duplex.audio.frames import FRAME_MS, frame_bytes

WEBRTC_RATES = (8000, 16000, 32000, 48000)
WEBRTC_FRAME_MS = (10, 20, 30)


@runtime_checkable
class VoiceActivityDetector(Protocol):
    """Classifies one frame of mono s16le PCM of exactly ``frame_ms`` at ``sample_rate``."""

    @property
    def frame_ms(self) -> int: ...

    @property
    def sample_rate(self) -> int: ...

    def is_speech(self, pcm: bytes) -> bool: ...


class WebRtcVad:
    """The guide's VAD (libwebrtc's GMM detector, via webrtcvad-wheels).

    Cheap (microseconds a frame) and good at speech against quiet, but steady tones
    and noise also count as speech: use it where the input is a microphone, not to
    tell speech from noise.
    """

    def __init__(self, aggressiveness: int, sample_rate: int, frame_ms: int = FRAME_MS) -> None:
        if aggressiveness not in range(4):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        if sample_rate not in WEBRTC_RATES:
            raise ValueError(f"webrtcvad supports sample rates {WEBRTC_RATES}, got {sample_rate}")
        if frame_ms not in WEBRTC_FRAME_MS:
            raise ValueError(f"webrtcvad supports frames of {WEBRTC_FRAME_MS} ms, got {frame_ms}")
        self._aggressiveness = aggressiveness
        self._sample_rate = sample_rate
        self._frame_ms = frame_ms
        self._frame_bytes = frame_bytes(sample_rate, frame_ms)
        self._vad = webrtcvad.Vad(aggressiveness)

    @property
    def frame_ms(self) -> int:
        return self._frame_ms

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def aggressiveness(self) -> int:
        return self._aggressiveness

    def is_speech(self, pcm: bytes) -> bool:
        if len(pcm) != self._frame_bytes:
            raise ValueError(
                f"expected one {self._frame_ms} ms frame at {self._sample_rate} Hz "
                f"({self._frame_bytes} bytes), got {len(pcm)} bytes"
            )
        return bool(self._vad.is_speech(pcm, self._sample_rate))
