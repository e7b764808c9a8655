"""Audio: 20 ms PCM frames, streaming resampling, frame cutting, VAD and WAV."""

from duplex.audio.frames import FRAME_MS, SAMPLE_WIDTH, PcmFrame, frame_bytes, frame_samples
from duplex.audio.framing import FrameCutter
from duplex.audio.resample import StreamResampler
from duplex.audio.vad import VoiceActivityDetector, WebRtcVad
from duplex.audio.wav import WavError, decode_wav, encode_wav

__all__ = [
    "FRAME_MS",
    "SAMPLE_WIDTH",
    "FrameCutter",
    "PcmFrame",
    "StreamResampler",
    "VoiceActivityDetector",
    "WavError",
    "WebRtcVad",
    "decode_wav",
    "encode_wav",
    "frame_bytes",
    "frame_samples",
]
