"""The client protocol as the code sees it: typed messages, their limits, and the one parser.

Client -> server: JSON text messages (`SessionStart`, `TextChunk`, `Control`, `SessionEnd`)
and, once the session has started, binary mic audio: 20 ms frames of s16le mono PCM at
`SessionStart.input_rate`.
Server -> client: JSON text messages (`SessionStarted`, `AudioEnd`, `BargeIn`, `BargeInEnd`,
`Transcript`, `Error`, `WorkerFailover`, `SessionEnded`) or binary: exactly one 20 ms frame
of s16le mono PCM at the session's sample rate.

Every message travels as a msgspec Struct of `protocol_wire.py`; the server messages are
those Structs, re-exported here. `parse_client_message` is the only way raw client input
becomes a message: anything it accepts is a fully validated, decoded message (nulls replaced
by defaults, `reference_audio` a `PcmFrame`); anything else raises `ProtocolError` with a
stable code and a message naming the offending field.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import assert_never

import msgspec

from duplex.audio.frames import PcmFrame
from duplex.audio.wav import WavError, decode_wav, encode_wav
from duplex.orchestrator import protocol_wire as wire
from duplex.orchestrator.errors import ErrorCode, ProtocolError
from duplex.orchestrator.protocol_wire import (
    DEFAULT_LANGUAGE,
    DEFAULT_SAMPLE_RATE,
    AudioEnd,
    BargeIn,
    BargeInEnd,
    BargeInOptions,
    BargeInPolicy,
    ControlCommand,
    Error,
    HeardPrecision,
    ServerMessage,
    SessionEnded,
    SessionStarted,
    Transcript,
    WorkerFailover,
)

__all__ = [
    "AudioEnd",
    "BargeIn",
    "BargeInEnd",
    "BargeInOptions",
    "BargeInPolicy",
    "ClientMessage",
    "Control",
    "ControlCommand",
    "Error",
    "ErrorCode",
    "HeardPrecision",
    "ProtocolError",
    "ProtocolLimits",
    "ServerMessage",
    "SessionEnd",
    "SessionEnded",
    "SessionStart",
    "SessionStarted",
    "TextChunk",
    "Transcript",
    "WorkerFailover",
    "parse_client_message",
    "parse_server_message",
]


@dataclass(frozen=True)
class ProtocolLimits:
    """Size and value limits applied while parsing.

    A `reference_audio` travels base64-encoded inside one message, so its cap must leave room
    within `max_message_bytes`: the default 1,474,560 WAV bytes (30 s of 24 kHz 16-bit mono,
    what XTTS conditions on, plus header room) are 1,966,080 base64 characters, under the
    2 MiB message limit. Raise both together (the orchestrator's config checks it).
    """

    max_message_bytes: int = 2_097_152
    max_text_chars: int = 5000
    allowed_sample_rates: tuple[int, ...] = (16000, 24000, 48000)
    max_reference_audio_bytes: int = 1_474_560


# ---------------------------------------------------------------- client -> server (decoded)


@dataclass(frozen=True)
class SessionStart:
    """Opens a session. `input_sample_rate` None means the mic audio comes at `sample_rate`;
    `barge_in` None (or any of its fields None) means the orchestrator's configuration."""

    model_id: str | None = None
    language: str = DEFAULT_LANGUAGE
    sample_rate: int = DEFAULT_SAMPLE_RATE
    capabilities: tuple[str, ...] = ()
    reference_audio: PcmFrame | None = None  # the decoded WAV
    input_sample_rate: int | None = None
    barge_in: BargeInOptions | None = None
    # Speaking rate, 0.25-4.0 (the compatible APIs set it); None: the model's own.
    speed: float | None = None

    @property
    def input_rate(self) -> int:
        """The sample rate of the client's binary mic frames."""
        return self.sample_rate if self.input_sample_rate is None else self.input_sample_rate

    def to_json(self) -> str:
        reference = None
        if self.reference_audio is not None:
            wav = encode_wav(self.reference_audio.pcm, self.reference_audio.sample_rate)
            reference = base64.b64encode(wav).decode("ascii")
        message = wire.SessionStart(
            model_id=self.model_id,
            language=self.language,
            sample_rate=self.sample_rate,
            capabilities=self.capabilities,
            reference_audio=reference,
            input_sample_rate=self.input_sample_rate,
            barge_in=self.barge_in,
            speed=self.speed,
        )
        return msgspec.json.encode(message).decode()


@dataclass(frozen=True)
class TextChunk:
    """Text of the current utterance; `is_final` ends the utterance."""

    text: str
    is_final: bool = False

    def to_json(self) -> str:
        return msgspec.json.encode(wire.TextChunk(self.text, self.is_final)).decode()


@dataclass(frozen=True)
class Control:
    """PAUSE, RESUME or STOP the session's output."""

    command: ControlCommand

    def to_json(self) -> str:
        return msgspec.json.encode(wire.Control(self.command)).decode()


@dataclass(frozen=True)
class SessionEnd:
    """The client ends the session."""

    def to_json(self) -> str:
        return msgspec.json.encode(wire.SessionEnd()).decode()


ClientMessage = SessionStart | TextChunk | Control | SessionEnd


# ---------------------------------------------------------------- parsing


def parse_client_message(raw: str | bytes, limits: ProtocolLimits) -> ClientMessage:
    """Validate one client text message; raises `ProtocolError` and nothing else."""
    message = wire.decode_client(_text_of(raw, limits.max_message_bytes))
    match message:
        case wire.SessionStart():
            return _session_start(message, limits)
        case wire.TextChunk():
            if len(message.text) > limits.max_text_chars:
                raise ProtocolError(
                    ErrorCode.TEXT_TOO_LONG,
                    f"TextChunk: text is {len(message.text)} characters; "
                    f"the limit is {limits.max_text_chars}",
                )
            return TextChunk(message.text, bool(message.is_final))
        case wire.Control():
            return Control(message.command)
        case wire.SessionEnd():
            return SessionEnd()
        case _:
            assert_never(message)


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Parse a server JSON message (for clients and tests); raises `ProtocolError`."""
    return wire.decode_server(_text_of(raw, None))


def _text_of(raw: str | bytes, max_bytes: int | None) -> str:
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
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message is not UTF-8 text") from None


# ---------------------------------------------------------------- semantic checks


def _session_start(w: wire.SessionStart, limits: ProtocolLimits) -> SessionStart:
    sample_rate = _allowed_rate(
        "sample_rate", DEFAULT_SAMPLE_RATE if w.sample_rate is None else w.sample_rate, limits
    )
    input_rate = None
    if w.input_sample_rate is not None:
        input_rate = _allowed_rate("input_sample_rate", w.input_sample_rate, limits)
    reference = None
    if w.reference_audio is not None:
        reference = _decode_reference_audio(w.reference_audio, limits)
    return SessionStart(
        model_id=w.model_id,
        language=DEFAULT_LANGUAGE if w.language is None else w.language,
        sample_rate=sample_rate,
        capabilities=w.capabilities or (),
        reference_audio=reference,
        input_sample_rate=input_rate,
        barge_in=w.barge_in,
        speed=w.speed,
    )


def _allowed_rate(field: str, rate: int, limits: ProtocolLimits) -> int:
    if rate not in limits.allowed_sample_rates:
        allowed = ", ".join(str(r) for r in limits.allowed_sample_rates)
        raise ProtocolError(
            ErrorCode.INVALID_SAMPLE_RATE,
            f"SessionStart: {field} {rate} is not allowed; use one of: {allowed}",
        )
    return rate


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
