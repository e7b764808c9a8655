"""Every message of the client protocol exactly as it travels, stated once as msgspec Structs,
and the decoding of JSON text into them.

Each message is a JSON object whose ``"type"`` names it (a tagged union); unknown fields are
refused. These Structs are what `protocol.py` decodes with and what the JSON Schema in
`docs/protocol.schema.json` is generated from (`protocol_schema.py`). A message that does
not fit raises `ProtocolError(INVALID_MESSAGE)` in the protocol's words, naming the field.

Server messages are sent exactly as defined here, so the code uses these Structs directly.
Client messages are lenient on the wire (an explicit ``null`` means the field's default, and
``reference_audio`` is base64 text): `protocol.py` checks them and hands the code the
decoded dataclasses of the same names.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

import msgspec
import msgspec.inspect as mi

from duplex.orchestrator.errors import ErrorCode, ProtocolError

DEFAULT_LANGUAGE = "en"
DEFAULT_SAMPLE_RATE = 48000

_NonEmpty = Annotated[str, msgspec.Meta(pattern=r"\S", description="not empty or blank")]
_SampleRate = Annotated[
    int, msgspec.Meta(description="Hz; allowed by default: 16000, 24000, 48000")
]
_Base64Wav = Annotated[
    str,
    msgspec.Meta(
        description="base64 of a mono 16-bit WAV (at most 48,000 WAV bytes by default)",
        extra_json_schema={"contentEncoding": "base64", "contentMediaType": "audio/wav"},
    ),
]


class ControlCommand(StrEnum):
    """What a `Control` message asks of the session."""

    PAUSE = "PAUSE"
    RESUME = "RESUME"
    STOP = "STOP"


class BargeInPolicy(StrEnum):
    """What a barge-in does to the utterance it cuts."""

    STOP = "stop"  # the rest of the utterance is dropped
    RESUME = "resume"  # a false interruption continues from the cut; a real one stops it


class HeardPrecision(StrEnum):
    """How `BargeIn.heard_text` was found: clause bounds, spread over the words, or alignment."""

    CLAUSE = "clause"
    ESTIMATE = "estimate"
    ALIGNMENT = "alignment"


class BargeInOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A session's barge-in overrides; each field left out (or null) keeps the orchestrator's
    configured value."""

    enabled: bool | None = None
    policy: BargeInPolicy | None = None
    min_speech_ms: Annotated[int, msgspec.Meta(ge=20, le=5000)] | None = None
    min_silence_ms: Annotated[int, msgspec.Meta(ge=20, le=10000)] | None = None
    false_interruption_ms: Annotated[int, msgspec.Meta(ge=0, le=10000)] | None = None


# ---------------------------------------------------------------- client -> server


class _ClientWire(
    msgspec.Struct,
    frozen=True,
    tag=True,
    tag_field="type",
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    pass


class SessionStart(_ClientWire, frozen=True):
    """Opens the session; must come first. Without `model_id` the router picks a model that
    speaks `language`. `sample_rate` is the rate of the audio sent to the client,
    `input_sample_rate` that of the client's binary mic frames (absent or null: the same as
    `sample_rate`). `barge_in` overrides the orchestrator's barge-in settings. `speed` is the
    speaking rate (1.0 the model's own); another rate goes only to workers advertising
    `speed`."""

    model_id: _NonEmpty | None = None
    language: _NonEmpty | None = DEFAULT_LANGUAGE
    sample_rate: _SampleRate | None = DEFAULT_SAMPLE_RATE
    capabilities: tuple[str, ...] | None = ()
    reference_audio: _Base64Wav | None = None
    input_sample_rate: _SampleRate | None = None
    barge_in: BargeInOptions | None = None
    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] | None = None


class TextChunk(_ClientWire, frozen=True):
    """Text of the current utterance; `is_final: true` ends the utterance."""

    text: str
    is_final: bool | None = False


class Control(_ClientWire, frozen=True):
    """Applies to the session at once."""

    command: ControlCommand


class SessionEnd(_ClientWire, frozen=True):
    """Ends the session; the server answers `SessionEnded` and closes."""


ClientWireMessage = SessionStart | TextChunk | Control | SessionEnd


# ---------------------------------------------------------------- server -> client


class _ServerMessage(
    msgspec.Struct, frozen=True, tag=True, tag_field="type", forbid_unknown_fields=True
):
    def to_json(self) -> str:
        """The message as one JSON text message."""
        return msgspec.json.encode(self).decode()


class SessionStarted(_ServerMessage, frozen=True):
    """The first reply to `SessionStart`: the model chosen and the worker serving it."""

    session_id: str
    model_id: str
    worker: str
    sample_rate: int


class AudioEnd(_ServerMessage, frozen=True):
    """Sent after the last binary frame of utterance number `utterance` (0-based)."""

    utterance: int


class Error(_ServerMessage, frozen=True):
    """A refusal or a failure; see the error codes in docs/protocol.md."""

    code: ErrorCode
    message: str


class WorkerFailover(_ServerMessage, frozen=True):
    """The session moved to another worker; the text not yet spoken continues there."""

    from_worker: str = msgspec.field(name="from")
    to_worker: str = msgspec.field(name="to")


class SessionEnded(_ServerMessage, frozen=True):
    """The last message of a connection the server ends; the socket closes right after."""

    reason: str


class BargeIn(_ServerMessage, frozen=True):
    """The user spoke over utterance `utterance`: its output was cut `at_ms` milliseconds of
    audio into it, and the listener heard its first `heard_chars` characters, `heard_text`."""

    utterance: int
    at_ms: int
    heard_chars: int
    heard_text: str
    heard_precision: HeardPrecision
    latency_ms: Annotated[
        float,
        msgspec.Meta(description="milliseconds from the speech onset in the input to the cut"),
    ]


class BargeInEnd(_ServerMessage, frozen=True):
    """A barge-in is settled: `resumed` true when the utterance went on after a false
    interruption, false when it was stopped."""

    resumed: bool


class Transcript(_ServerMessage, frozen=True):
    """What the user said (speech recognition on), sent when their speech ended. `utterance` is
    the utterance (numbered as in `AudioEnd`) the speech barged in on; null when it did not."""

    text: str
    utterance: int | None = None


ServerMessage = (
    SessionStarted
    | AudioEnd
    | Error
    | WorkerFailover
    | SessionEnded
    | BargeIn
    | BargeInEnd
    | Transcript
)


# ---------------------------------------------------------------- decoding


def _tags(union: Any) -> Mapping[str, type[msgspec.Struct]]:
    return MappingProxyType({t.__struct_config__.tag: t for t in typing.get_args(union)})


_CLIENT_TYPES = _tags(ClientWireMessage)
_SERVER_TYPES = _tags(ServerMessage)
# Decoders keep no state between calls; building them once saves the type analysis.
_CLIENT_DECODER: msgspec.json.Decoder[ClientWireMessage] = msgspec.json.Decoder(ClientWireMessage)
_SERVER_DECODER: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)
_T = TypeVar("_T")


def decode_client(text: str) -> ClientWireMessage:
    """One client message from its JSON text; raises `ProtocolError` and nothing else."""
    return _decode(_CLIENT_DECODER, text, _CLIENT_TYPES)


def decode_server(text: str) -> ServerMessage:
    """One server message from its JSON text; raises `ProtocolError` and nothing else."""
    return _decode(_SERVER_DECODER, text, _SERVER_TYPES)


def _decode(
    decoder: msgspec.json.Decoder[_T], text: str, types: Mapping[str, type[msgspec.Struct]]
) -> _T:
    try:
        return decoder.decode(text)
    except msgspec.ValidationError as exc:  # valid JSON (so far), not a valid message
        raise _explain(str(exc), text, types) from None
    except (msgspec.DecodeError, RecursionError):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message is not valid JSON") from None
    except UnicodeError:  # a str holding lone surrogates
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message is not UTF-8 text") from None


# ---------------------------------------------------------------- error messages
#
# msgspec says what failed and where ("Expected `str`, got `int` - at `$.text`"); the client
# is told in the protocol's words, naming the message type and the field. Only this error
# path decodes the JSON a second time (untyped) to read the offending value.

_AT = " - at `"
_PATH = re.compile(r"\$(?:\.[A-Za-z_]\w*|\[\d+\])*")
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")
_MISSING = re.compile(r"Object missing required field `(\w+)`")
_NOT_AN_OBJECT = 'message must be a JSON object with a "type" field'


def _explain(detail: str, text: str, types: Mapping[str, type[msgspec.Struct]]) -> ProtocolError:
    what, path = _split_path(detail)
    if not path and what.startswith("Expected `object`"):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, _NOT_AN_OBJECT)
    try:
        obj = msgspec.json.decode(text)
    except msgspec.ValidationError:  # the only one untyped: a number beyond a float's range
        where = f" at {'.'.join(map(str, path))!r}" if path else ""
        return ProtocolError(ErrorCode.INVALID_MESSAGE, f"message has a number out of range{where}")
    except (msgspec.DecodeError, RecursionError):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, "message is not valid JSON")
    if not isinstance(obj, dict):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, _NOT_AN_OBJECT)
    kind = obj.get("type")
    cls = types.get(kind) if isinstance(kind, str) else None
    if cls is None:
        shown = "missing" if kind is None else msgspec.json.encode(kind).decode()[:60]
        known = ", ".join(types)
        return ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"unknown message type {shown}; expected one of: {known}"
        )
    return ProtocolError(
        ErrorCode.INVALID_MESSAGE, f"{kind}: {_field_problem(what, path, obj, cls)}"
    )


def _split_path(detail: str) -> tuple[str, list[str | int]]:
    """Split msgspec's "Expected ... - at `$.a.b[0]`" into ("Expected ...", ["a", "b", 0])."""
    what, sep, where = detail.rpartition(_AT)
    if not sep or not where.endswith("`") or not _PATH.fullmatch(where[:-1]):
        return detail, []
    return what, [name if name else int(index) for name, index in _STEP.findall(where[:-1])]


def _field_problem(what: str, path: list[str | int], obj: Any, cls: type[msgspec.Struct]) -> str:
    prefix = "".join(f"{step}." for step in path)
    if missing := _MISSING.fullmatch(what):
        return f"missing required field {prefix + missing.group(1)!r}"
    if what.startswith("Object contains unknown field"):
        value, struct = _value_at(obj, path), _struct_of(_type_at(cls, path))
        if isinstance(value, dict) and struct is not None:
            known = {f.encode_name for f in struct.fields} | {struct.tag_field}
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
                return f"unknown field {prefix + unknown[0]!r}{more}"
        return what
    index = path[-1] if path and isinstance(path[-1], int) else None
    if index is not None:  # an item of a list: name the list
        path = path[:-1]
    name = ".".join(str(step) for step in path)
    expected, value = _type_at(cls, path), _value_at(obj, path)
    if expected is None:
        return f"field {name!r}: {what}"
    if index is not None and isinstance(value, list) and index < len(value):
        return (
            f"field {name!r} must be {_describe(expected)}; item {index} is {_kind(value[index])}"
        )
    if isinstance(value, str) and not value.strip() and "non-empty" in _describe(expected):
        return f"field {name!r} must not be empty"
    got = _show(value) if _same_kind(expected, value) else _kind(value)
    return f"field {name!r} must be {_describe(expected)}, not {got}"


def _value_at(obj: Any, path: list[str | int]) -> Any:
    for step in path:
        if isinstance(step, str) and isinstance(obj, dict):
            obj = obj.get(step)
        elif isinstance(step, int) and isinstance(obj, list) and step < len(obj):
            obj = obj[step]
        else:
            return None
    return obj


def _type_at(cls: type[msgspec.Struct], path: list[str | int]) -> mi.Type | None:
    t: mi.Type | None = mi.type_info(cls)
    for step in path:
        struct = _struct_of(t)
        field = next((f for f in struct.fields if f.encode_name == step), None) if struct else None
        t = field.type if field else None
    return t


def _struct_of(t: mi.Type | None) -> mi.StructType | None:
    alternatives = _alternatives(t) if t is not None else []
    return next((a for a in alternatives if isinstance(a, mi.StructType)), None)


def _alternatives(t: mi.Type) -> list[mi.Type]:
    """The types a value may have, without null and without metadata wrappers."""
    if isinstance(t, mi.Metadata):
        return _alternatives(t.type)
    if isinstance(t, mi.UnionType):
        return [a for u in t.types for a in _alternatives(u)]
    return [] if isinstance(t, mi.NoneType) else [t]


def _describe(t: mi.Type) -> str:
    return " or ".join(_describe_one(a) for a in _alternatives(t)) or "null"


def _describe_one(t: mi.Type) -> str:
    if isinstance(t, mi.IntType):
        if t.ge is not None and t.le is not None:
            return f"an integer from {t.ge} to {t.le}"
        return "an integer"
    if isinstance(t, mi.FloatType):
        return "a number"
    if isinstance(t, mi.StrType):
        return "a non-empty string" if t.pattern or t.min_length else "a string"
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.EnumType):
        return "one of: " + ", ".join(str(member.value) for member in t.cls)
    if isinstance(t, mi.VarTupleType | mi.ListType):
        return "a list of strings" if isinstance(t.item_type, mi.StrType) else "a list"
    if isinstance(t, mi.StructType):
        return "an object"
    return "a valid value"


def _kind(value: Any) -> str:
    """The JSON kind of a decoded value, in msgspec's words."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__  # bool, int, float, str


def _same_kind(t: mi.Type, value: Any) -> bool:
    """True when `value` has the expected JSON kind and failed a constraint (range, enum)."""
    for a in _alternatives(t):
        if isinstance(a, mi.IntType) and isinstance(value, int) and not isinstance(value, bool):
            return True
        if isinstance(a, mi.StrType | mi.EnumType) and isinstance(value, str):
            return True
    return False


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
