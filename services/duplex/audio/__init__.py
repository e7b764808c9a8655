"""Audio: 20 ms PCM frames, streaming resampling, frame cutting, VAD, speech tracking,
the mic input, speech recognition, WAV."""

from duplex.audio.asr import AsrUnavailable, Transcriber, WhisperTranscriber
from duplex.audio.frames import FRAME_MS, SAMPLE_WIDTH, PcmFrame, frame_bytes, frame_samples
from duplex.audio.framing import FrameCutter
from duplex.audio.mic import MIC_RATES, MicFrameError, MicInput
from duplex.audio.resample import StreamResampler
from duplex.audio.speech import (
    SpeechEnded,
    SpeechEvent,
    SpeechStarted,
    SpeechState,
    SpeechTracker,
)
from duplex.audio.vad import (
    VAD_ENGINES,
    VAD_SAMPLE_RATE,
    SileroModel,
    SileroVad,
    VoiceActivityDetector,
    WebRtcVad,
    make_vad,
)
from duplex.audio.wav import WavError, decode_wav, encode_wav

__all__ = [
    "FRAME_MS",
    "MIC_RATES",
    "SAMPLE_WIDTH",
    "VAD_ENGINES",
    "VAD_SAMPLE_RATE",
    "AsrUnavailable",
    "FrameCutter",
    "MicFrameError",
    "MicInput",
    "PcmFrame",
    "SileroModel",
    "SileroVad",
    "SpeechEnded",
    "SpeechEvent",
    "SpeechStarted",
    "SpeechState",
    "SpeechTracker",
    "StreamResampler",
    "Transcriber",
    "VoiceActivityDetector",
    "WavError",
    "WebRtcVad",
    "WhisperTranscriber",
    "decode_wav",
    "encode_wav",
    "frame_bytes",
    "frame_samples",
    "make_vad",
]
