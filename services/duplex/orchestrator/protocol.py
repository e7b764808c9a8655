"""The WebSocket wire protocol: typed client and server messages and their JSON form.

Client -> server messages are JSON text: `SessionStart`, `TextChunk`, `Control`, `SessionEnd`.
Server -> client messages are JSON text (`SessionStarted`, `AudioEnd`, `Error`,
`WorkerFailover`, `SessionEnded`) or binary: exactly one 20 ms frame of s16le mono PCM at the
session's sample rate.

`parse_client_message` is the only way raw client input becomes a message: anything it accepts
is a fully validated dataclass, anything else raises `ProtocolError` with a stable code and a
message naming the offending field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from duplex.audio.frames import PcmFrame
from duplex.audio.wav import WavError, decode_wav, encode_wav


class ErrorCode(StrEnum):
    """Stable error codes of `Error` messages; clients may rely on them."""

    INVALID_MESSAGE = "INVALID_MESSAGE"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    NO_WORKER_AVAILABLE = "NO_WORKER_AVAILABLE"
    CAPACITY = "CAPACITY"
    TEXT_TOO_LONG = "TEXT_TOO_LONG"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    INVALID_SAMPLE_RATE = "INVALID_SAMPLE_RATE"
    INVALID_REFERENCE_AUDIO = "INVALID_REFERENCE_AUDIO"
    NOT_STARTED = "NOT_STARTED"
    ALREADY_STARTED = "ALREADY_STARTED"
    WORKER_FAILED = "WORKER_FAILED"
    IDLE_TIMEOUT = "IDLE_TIMEOUT"
    INTERNAL = "INTERNAL"


class ProtocolError(Exception):
    """Raw input that is not a valid message; `code` and `message` go to the client as-is."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ControlCommand(StrEnum):
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    STOP = "STOP"


@dataclass(frozen=True)
class ProtocolLimits:
    """Size and value limits applied while parsing.

    A `reference_audio` travels base64-encoded inside one message, so its cap must leave room
    within `max_message_bytes`: 48,000 WAV bytes are 64,000 base64 characters, under the
    64 KiB message limit (about 1.5 s of 16 kHz audio). Raise both together.
    """

    max_message_bytes: int = 65536
    max_text_chars: int = 5000
    allowed_sample_rates: tuple[int, ...] = (16000, 24000, 48000)
    max_reference_audio_bytes: int = 48000


# ---------------------------------------------------------------- client -> server


@dataclass(frozen=True)
class SessionStart:
    model_id: str | None = None
    language: str = "en"
    sample_rate: int = 48000
    capabilities: tuple[str, ...] = ()
    reference_audio: PcmFrame | None = None  # the decoded WAV

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "type": "SessionStart",
            "language": self.language,
            "sample_rate": self.sample_rate,
            "capabilities": list(self.capabilities),
        }
        if self.model_id is not None:
            data["model_id"] = self.model_id
        if self.reference_audio is not None:
            wav = encode_wav(self.reference_audio.pcm, self.reference_audio.sample_rate)
            data["reference_audio"] = base64.b64encode(wav).decode("ascii")
        return json.dumps(data)


@dataclass(frozen=True)
class TextChunk:
    text: str
    is_final: bool = False

    def to_json(self) -> str:
        return json.dumps({"type": "TextChunk", "text": self.text, "is_final": self.is_final})


@dataclass(frozen=True)
class Control:
    command: ControlCommand

    def to_json(self) -> str:
        return json.dumps({"type": "Control", "command": self.command.value})


@dataclass(frozen=True)
class SessionEnd:
    def to_json(self) -> str:
        return json.dumps({"type": "SessionEnd"})


ClientMessage = SessionStart | TextChunk | Control | SessionEnd


# ---------------------------------------------------------------- server -> client


@dataclass(frozen=True)
class SessionStarted:
    session_id: str
    model_id: str
    worker: str
    sample_rate: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "type": "SessionStarted",
                "session_id": self.session_id,
                "model_id": self.model_id,
                "worker": self.worker,
                "sample_rate": self.sample_rate,
            }
        )


@dataclass(frozen=True)
class AudioEnd:
    """Sent after the last binary frame of utterance number `utterance` (0-based)."""

    utterance: int

    def to_json(self) -> str:
        return json.dumps({"type": "AudioEnd", "utterance": self.utterance})


@dataclass(frozen=True)
class Error:
    code: ErrorCode
    message: str

    def to_json(self) -> str:
        return json.dumps({"type": "Error", "code": self.code.value, "message": self.message})


@dataclass(frozen=True)
class WorkerFailover:
    from_worker: str
    to_worker: str

    def to_json(self) -> str:
        return json.dumps(
            {"type": "WorkerFailover", "from": self.from_worker, "to": self.to_worker}
        )


@dataclass(frozen=True)
class SessionEnded:
    reason: str

    def to_json(self) -> str:
        return json.dumps({"type": "SessionEnded", "reason": self.reason})


ServerMessage = SessionStarted | AudioEnd | Error | WorkerFailover | SessionEnded


# ---------------------------------------------------------------- parsing


def parse_client_message(raw: str | bytes, limits: ProtocolLimits) -> ClientMessage:
    """Validate one client text message; raises `ProtocolError` and nothing else."""
    obj = _load_object(raw, limits.max_message_bytes)
    kind = obj.get("type")
    parser = _CLIENT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        known = ", ".join(_CLIENT_PARSERS)
        shown = "missing" if kind is None else json.dumps(kind)[:60]
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"unknown message type {shown}; expected one of: {known}"
        )
    fields = _Fields(obj, str(kind))
    message = parser(fields, limits)
    fields.reject_unknown()
    return message


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Parse a server JSON message (for clients and tests); raises `ProtocolError`."""
    obj = _load_object(raw, None)
    kind = obj.get("type")
    f = _Fields(obj, str(kind))
    message: ServerMessage
    if kind == "SessionStarted":
        message = SessionStarted(
            session_id=f.string("session_id"),
            model_id=f.string("model_id"),
            worker=f.string("worker"),
            sample_rate=f.integer("sample_rate"),
        )
    elif kind == "AudioEnd":
        message = AudioEnd(utterance=f.integer("utterance"))
    elif kind == "Error":
        code = f.string("code")
        try:
            error_code = ErrorCode(code)
        except ValueError:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"unknown error code {code!r}") from None
        message = Error(code=error_code, message=f.string("message"))
    elif kind == "WorkerFailover":
        message = WorkerFailover(from_worker=f.string("from"), to_worker=f.string("to"))
    elif kind == "SessionEnded":
        message = SessionEnded(reason=f.string("reason"))
    else:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"unknown server message type {kind!r}")
    return message


def _load_object(raw: str | bytes, max_bytes: int | None) -> dict[str, Any]:
    if max_bytes is not None:
        # A str has at most 4 UTF-8 bytes per character: skip the encode when it cannot matter.
        size = len(raw) if isinstance(raw, bytes) or len(raw) * 4 <= max_bytes else None
        if size is None:
            size = len(raw.encode("utf-8", errors="surrogatepass"))  # type: ignore[union-attr]
        if size > max_bytes:
            raise ProtocolError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"message is {size} bytes; the limit is {max_bytes} bytes",
            )
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message is not UTF-8 text") from None
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        # ValueError also covers integers too long to convert; RecursionError deep nesting.
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, 'message must be a JSON object with a "type" field'
        )
    return obj


class _Fields:
    """Typed access to a message's fields that remembers which ones were read."""

    def __init__(self, obj: Mapping[str, Any], kind: str) -> None:
        self._obj = obj
        self._kind = kind
        self._seen = {"type"}

    def _get(self, name: str) -> Any:
        self._seen.add(name)
        if name not in self._obj:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f"{self._kind}: missing required field {name!r}"
            )
        return self._obj[name]

    def has(self, name: str) -> bool:
        self._seen.add(name)
        return name in self._obj and self._obj[name] is not None

    def _bad(self, name: str, expected: str) -> ProtocolError:
        got = type(self._obj[name]).__name__ if self._obj[name] is not None else "null"
        return ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"{self._kind}: field {name!r} must be {expected}, not {got}"
        )

    def string(self, name: str, *, non_empty: bool = False) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise self._bad(name, "a string")
        if non_empty and not value.strip():
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f"{self._kind}: field {name!r} must not be empty"
            )
        return value

    def integer(self, name: str) -> int:
        value = self._get(name)
        # bool is an int subclass in Python but not an integer on the wire.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(name, "an integer")
        return value

    def boolean(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(name, "a list of strings")
        return tuple(value)

    def reject_unknown(self) -> None:
        unknown = sorted(set(self._obj) - self._seen)
        if unknown:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"{self._kind}: unknown field {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            )


def _parse_session_start(f: _Fields, limits: ProtocolLimits) -> SessionStart:
    model_id = f.string("model_id", non_empty=True) if f.has("model_id") else None
    language = f.string("language", non_empty=True) if f.has("language") else "en"
    sample_rate = f.integer("sample_rate") if f.has("sample_rate") else 48000
    if sample_rate not in limits.allowed_sample_rates:
        allowed = ", ".join(str(r) for r in limits.allowed_sample_rates)
        raise ProtocolError(
            ErrorCode.INVALID_SAMPLE_RATE,
            f"SessionStart: sample_rate {sample_rate} is not allowed; use one of: {allowed}",
        )
    capabilities = f.strings("capabilities") if f.has("capabilities") else ()
    reference = None
    if f.has("reference_audio"):
        reference = _decode_reference_audio(f.string("reference_audio"), limits)
    return SessionStart(
        model_id=model_id,
        language=language,
        sample_rate=sample_rate,
        capabilities=capabilities,
        reference_audio=reference,
    )


def _decode_reference_audio(text: str, limits: ProtocolLimits) -> PcmFrame:
    cap = limits.max_reference_audio_bytes
    # Check the encoded length first so an oversized value is never decoded.
    if len(text) > 4 * ((cap + 2) // 3):
        raise ProtocolError(
            ErrorCode.INVALID_REFERENCE_AUDIO,
            f"SessionStart: reference_audio is over its cap of {cap} bytes",
        )
    try:
        wav = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ProtocolError(
            ErrorCode.INVALID_REFERENCE_AUDIO, "SessionStart: reference_audio is not valid base64"
        ) from None
    if len(wav) > cap:
        raise ProtocolError(
            ErrorCode.INVALID_REFERENCE_AUDIO,
            f"SessionStart: reference_audio is {len(wav)} bytes; its cap is {cap} bytes",
        )
    try:
        return decode_wav(wav)
    except (WavError, RuntimeError, ValueError) as exc:
        # The stdlib wave reader raises a bare RuntimeError on some corrupt chunk sizes.
        raise ProtocolError(
            ErrorCode.INVALID_REFERENCE_AUDIO,
            f"SessionStart: reference_audio is not a mono 16-bit WAV: {exc}",
        ) from None


def _parse_text_chunk(f: _Fields, limits: ProtocolLimits) -> TextChunk:
    text = f.string("text")
    if len(text) > limits.max_text_chars:
        raise ProtocolError(
            ErrorCode.TEXT_TOO_LONG,
            f"TextChunk: text is {len(text)} characters; the limit is {limits.max_text_chars}",
        )
    is_final = f.boolean("is_final") if f.has("is_final") else False
    return TextChunk(text=text, is_final=is_final)


def _parse_control(f: _Fields, limits: ProtocolLimits) -> Control:
    command = f.string("command")
    try:
        return Control(ControlCommand(command))
    except ValueError:
        known = ", ".join(c.value for c in ControlCommand)
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"Control: unknown command {command[:40]!r}; expected one of: {known}",
        ) from None


def _parse_session_end(f: _Fields, limits: ProtocolLimits) -> SessionEnd:
    return SessionEnd()


_CLIENT_PARSERS: Mapping[str, Callable[[_Fields, ProtocolLimits], ClientMessage]] = (
    MappingProxyType(
        {
            "SessionStart": _parse_session_start,
            "TextChunk": _parse_text_chunk,
            "Control": _parse_control,
            "SessionEnd": _parse_session_end,
        }
    )
)
