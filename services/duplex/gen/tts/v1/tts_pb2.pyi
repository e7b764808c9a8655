from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControlCommand(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTROL_COMMAND_UNSPECIFIED: _ClassVar[ControlCommand]
    PAUSE: _ClassVar[ControlCommand]
    RESUME: _ClassVar[ControlCommand]
    STOP: _ClassVar[ControlCommand]
CONTROL_COMMAND_UNSPECIFIED: ControlCommand
PAUSE: ControlCommand
RESUME: ControlCommand
STOP: ControlCommand

class SynthesizeRequest(_message.Message):
    __slots__ = ("open", "text")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    open: SessionOpen
    text: TextChunk
    def __init__(self, open: _Optional[_Union[SessionOpen, _Mapping]] = ..., text: _Optional[_Union[TextChunk, _Mapping]] = ...) -> None: ...

class SessionOpen(_message.Message):
    __slots__ = ("session_id", "model_id", "sample_rate", "language", "lead_ms", "reference_audio", "max_frames_per_message", "speed")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LEAD_MS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_AUDIO_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_PER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_id: str
    sample_rate: int
    language: str
    lead_ms: int
    reference_audio: ReferenceAudio
    max_frames_per_message: int
    speed: float
    def __init__(self, session_id: _Optional[str] = ..., model_id: _Optional[str] = ..., sample_rate: _Optional[int] = ..., language: _Optional[str] = ..., lead_ms: _Optional[int] = ..., reference_audio: _Optional[_Union[ReferenceAudio, _Mapping]] = ..., max_frames_per_message: _Optional[int] = ..., speed: _Optional[float] = ...) -> None: ...

class ReferenceAudio(_message.Message):
    __slots__ = ("pcm", "sample_rate")
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    sample_rate: int
    def __init__(self, pcm: _Optional[bytes] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class TextChunk(_message.Message):
    __slots__ = ("text", "is_final")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    text: str
    is_final: bool
    def __init__(self, text: _Optional[str] = ..., is_final: _Optional[bool] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("opened", "frame", "utterance_end", "frames")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_END_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    opened: SessionOpened
    frame: AudioFrame
    utterance_end: UtteranceEnd
    frames: AudioFrames
    def __init__(self, opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., frame: _Optional[_Union[AudioFrame, _Mapping]] = ..., utterance_end: _Optional[_Union[UtteranceEnd, _Mapping]] = ..., frames: _Optional[_Union[AudioFrames, _Mapping]] = ...) -> None: ...

class AudioFrames(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[AudioFrame]
    def __init__(self, frames: _Optional[_Iterable[_Union[AudioFrame, _Mapping]]] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("session_id", "model_id", "sample_rate", "frame_duration_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    FRAME_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_id: str
    sample_rate: int
    frame_duration_ms: int
    def __init__(self, session_id: _Optional[str] = ..., model_id: _Optional[str] = ..., sample_rate: _Optional[int] = ..., frame_duration_ms: _Optional[int] = ...) -> None: ...

class AudioFrame(_message.Message):
    __slots__ = ("pcm", "sample_rate", "sequence", "utterance", "text_start", "text_end", "clause_end")
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_START_FIELD_NUMBER: _ClassVar[int]
    TEXT_END_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_END_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    sample_rate: int
    sequence: int
    utterance: int
    text_start: int
    text_end: int
    clause_end: bool
    def __init__(self, pcm: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., sequence: _Optional[int] = ..., utterance: _Optional[int] = ..., text_start: _Optional[int] = ..., text_end: _Optional[int] = ..., clause_end: _Optional[bool] = ...) -> None: ...

class UtteranceEnd(_message.Message):
    __slots__ = ("utterance", "text_length", "voiced_length", "stopped", "frames")
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VOICED_LENGTH_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    utterance: int
    text_length: int
    voiced_length: int
    stopped: bool
    frames: int
    def __init__(self, utterance: _Optional[int] = ..., text_length: _Optional[int] = ..., voiced_length: _Optional[int] = ..., stopped: _Optional[bool] = ..., frames: _Optional[int] = ...) -> None: ...

class ControlRequest(_message.Message):
    __slots__ = ("session_id", "command")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    command: ControlCommand
    def __init__(self, session_id: _Optional[str] = ..., command: _Optional[_Union[ControlCommand, str]] = ...) -> None: ...

class ControlResponse(_message.Message):
    __slots__ = ("session_id", "state")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state: str
    def __init__(self, session_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "family", "languages", "capabilities", "resident", "native_sample_rate", "description", "active_sessions")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    NATIVE_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    family: str
    languages: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    resident: bool
    native_sample_rate: int
    description: str
    active_sessions: int
    def __init__(self, model_id: _Optional[str] = ..., family: _Optional[str] = ..., languages: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., resident: _Optional[bool] = ..., native_sample_rate: _Optional[int] = ..., description: _Optional[str] = ..., active_sessions: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model_id")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model_id: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model_id: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("model", "loaded_now", "load_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOADED_NOW_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    loaded_now: bool
    load_ms: float
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., loaded_now: _Optional[bool] = ..., load_ms: _Optional[float] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCapabilitiesResponse(_message.Message):
    __slots__ = ("worker_name", "adapter_type", "streaming", "zero_shot", "languages", "resident_models", "available_models", "max_text_chars", "sample_rates", "frame_duration_ms", "device")
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_TYPE_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_MODELS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATES_FIELD_NUMBER: _ClassVar[int]
    FRAME_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    worker_name: str
    adapter_type: str
    streaming: bool
    zero_shot: bool
    languages: _containers.RepeatedScalarFieldContainer[str]
    resident_models: _containers.RepeatedScalarFieldContainer[str]
    available_models: _containers.RepeatedScalarFieldContainer[str]
    max_text_chars: int
    sample_rates: _containers.RepeatedScalarFieldContainer[int]
    frame_duration_ms: int
    device: str
    def __init__(self, worker_name: _Optional[str] = ..., adapter_type: _Optional[str] = ..., streaming: _Optional[bool] = ..., zero_shot: _Optional[bool] = ..., languages: _Optional[_Iterable[str]] = ..., resident_models: _Optional[_Iterable[str]] = ..., available_models: _Optional[_Iterable[str]] = ..., max_text_chars: _Optional[int] = ..., sample_rates: _Optional[_Iterable[int]] = ..., frame_duration_ms: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...
