"""The WebSocket wire protocol: parsing, validation, error codes and JSON round trips."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from duplex.audio.frames import PcmFrame
from duplex.audio.wav import encode_wav
from duplex.orchestrator.protocol import (
    AudioEnd,
    ClientMessage,
    Control,
    ControlCommand,
    Error,
    ErrorCode,
    ProtocolError,
    ProtocolLimits,
    SessionEnd,
    SessionEnded,
    SessionStart,
    SessionStarted,
    TextChunk,
    WorkerFailover,
    parse_client_message,
    parse_server_message,
)
from hypothesis import given, settings
from hypothesis import strategies as st

LIMITS = ProtocolLimits()


def parse(obj: Any, limits: ProtocolLimits = LIMITS) -> ClientMessage:
    return parse_client_message(json.dumps(obj), limits)


def error_of(raw: str | bytes, limits: ProtocolLimits = LIMITS) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw, limits)
    return info.value


def wav_b64(pcm: bytes, rate: int = 16000) -> str:
    return base64.b64encode(encode_wav(pcm, rate)).decode("ascii")


def test_guide_session_start_parses_with_its_fields() -> None:
    """The deployment guide's SessionStart gives a typed message with those values."""
    msg = parse({"type": "SessionStart", "model_id": "m1", "sample_rate": 48000, "language": "en"})
    assert msg == SessionStart(model_id="m1", language="en", sample_rate=48000)


def test_session_start_defaults_language_en_and_48k() -> None:
    """A bare SessionStart defaults to English at 48 kHz, no model, no capabilities."""
    assert parse({"type": "SessionStart"}) == SessionStart(None, "en", 48000, (), None)


def test_session_start_capabilities_and_reference_audio_decode() -> None:
    """Capabilities become a tuple and reference_audio a decoded PCM frame."""
    pcm = b"\x01\x00\xff\x7f" * 100
    msg = parse(
        {"type": "SessionStart", "capabilities": ["zero_shot"], "reference_audio": wav_b64(pcm)}
    )
    assert isinstance(msg, SessionStart)
    assert msg.capabilities == ("zero_shot",)
    assert msg.reference_audio == PcmFrame(pcm=pcm, sample_rate=16000)


def test_text_chunk_and_control_and_session_end_parse() -> None:
    """Each other client message type parses into its dataclass."""
    assert parse({"type": "TextChunk", "text": "Hi.", "is_final": True}) == TextChunk("Hi.", True)
    assert parse({"type": "TextChunk", "text": "Hi"}) == TextChunk("Hi", False)
    assert parse({"type": "Control", "command": "PAUSE"}) == Control(ControlCommand.PAUSE)
    assert parse({"type": "SessionEnd"}) == SessionEnd()


def test_bytes_input_is_accepted_as_utf8_json() -> None:
    """A message given as UTF-8 bytes parses like the same text."""
    raw = json.dumps({"type": "TextChunk", "text": "héllo"}).encode()
    assert parse_client_message(raw, LIMITS) == TextChunk("héllo")


@pytest.mark.parametrize("raw", ["hello", "{", "", "\x00", b"\xff\xfe"])
def test_non_json_is_invalid_message(raw: str | bytes) -> None:
    """Text that is not JSON (or not UTF-8) is INVALID_MESSAGE."""
    err = error_of(raw)
    assert err.code is ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize("raw", ["[1, 2]", "42", '"SessionStart"', "null"])
def test_json_that_is_not_an_object_is_invalid_message(raw: str) -> None:
    """A JSON value other than an object is INVALID_MESSAGE mentioning the type field."""
    err = error_of(raw)
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert "type" in err.message


def test_unknown_type_names_the_known_types() -> None:
    """An unknown "type" is INVALID_MESSAGE listing every known type."""
    err = error_of(json.dumps({"type": "Hello"}))
    assert err.code is ErrorCode.INVALID_MESSAGE
    for known in ("SessionStart", "TextChunk", "Control", "SessionEnd"):
        assert known in err.message


def test_missing_type_is_invalid_message() -> None:
    """An object without "type" is INVALID_MESSAGE."""
    assert error_of(json.dumps({"text": "x"})).code is ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"type": "TextChunk"}, "text"),
        ({"type": "TextChunk", "text": 5}, "text"),
        ({"type": "TextChunk", "text": "a", "is_final": "yes"}, "is_final"),
        ({"type": "TextChunk", "text": "a", "is_final": 1}, "is_final"),
        ({"type": "Control"}, "command"),
        ({"type": "Control", "command": 1}, "command"),
        ({"type": "SessionStart", "sample_rate": "48000"}, "sample_rate"),
        ({"type": "SessionStart", "sample_rate": True}, "sample_rate"),
        ({"type": "SessionStart", "sample_rate": 48000.0}, "sample_rate"),
        ({"type": "SessionStart", "model_id": 3}, "model_id"),
        ({"type": "SessionStart", "model_id": ""}, "model_id"),
        ({"type": "SessionStart", "language": ["en"]}, "language"),
        ({"type": "SessionStart", "capabilities": "zero_shot"}, "capabilities"),
        ({"type": "SessionStart", "capabilities": [1]}, "capabilities"),
        ({"type": "SessionStart", "modelId": "m"}, "modelId"),
        ({"type": "SessionEnd", "reason": "bye"}, "reason"),
    ],
)
def test_missing_ill_typed_or_unknown_field_names_the_field(obj: Any, field: str) -> None:
    """Missing, ill-typed or unknown fields are INVALID_MESSAGE naming the field."""
    err = error_of(json.dumps(obj))
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert repr(field) in err.message


def test_unknown_control_command_lists_the_commands() -> None:
    """A Control command outside PAUSE/RESUME/STOP is INVALID_MESSAGE listing them."""
    err = error_of(json.dumps({"type": "Control", "command": "pause"}))
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert "PAUSE, RESUME, STOP" in err.message


def test_null_optional_fields_take_their_defaults() -> None:
    """An explicit null for an optional field means the default."""
    msg = parse({"type": "SessionStart", "model_id": None, "language": None})
    assert msg == SessionStart()


def test_text_over_the_limit_is_text_too_long() -> None:
    """Text longer than max_text_chars is TEXT_TOO_LONG; exactly the limit is fine."""
    limits = ProtocolLimits(max_text_chars=10)
    assert parse({"type": "TextChunk", "text": "x" * 10}, limits) == TextChunk("x" * 10)
    err = error_of(json.dumps({"type": "TextChunk", "text": "x" * 11}), limits)
    assert err.code is ErrorCode.TEXT_TOO_LONG
    assert "10" in err.message


def test_message_over_the_size_limit_is_message_too_large() -> None:
    """A raw message over max_message_bytes is MESSAGE_TOO_LARGE, whatever its content."""
    limits = ProtocolLimits(max_message_bytes=1024)
    big = json.dumps({"type": "TextChunk", "text": "é" * 600})  # 600 chars, 1,200 bytes
    assert error_of(big, limits).code is ErrorCode.MESSAGE_TOO_LARGE
    assert error_of(b"x" * 1025, limits).code is ErrorCode.MESSAGE_TOO_LARGE
    assert error_of("not json" * 200, limits).code is ErrorCode.MESSAGE_TOO_LARGE


def test_sample_rate_not_allowed_names_the_allowed_rates() -> None:
    """A sample_rate outside the allowed ones is INVALID_SAMPLE_RATE listing them."""
    err = error_of(json.dumps({"type": "SessionStart", "sample_rate": 44100}))
    assert err.code is ErrorCode.INVALID_SAMPLE_RATE
    assert "16000, 24000, 48000" in err.message


def test_reference_audio_not_base64_is_invalid_reference_audio() -> None:
    """reference_audio that is not base64 is INVALID_REFERENCE_AUDIO."""
    err = error_of(json.dumps({"type": "SessionStart", "reference_audio": "not base64!!"}))
    assert err.code is ErrorCode.INVALID_REFERENCE_AUDIO


def test_reference_audio_not_a_wav_is_invalid_reference_audio() -> None:
    """Base64 of something that is not a WAV is INVALID_REFERENCE_AUDIO."""
    junk = base64.b64encode(b"RIFX" + b"\x00" * 100).decode()
    err = error_of(json.dumps({"type": "SessionStart", "reference_audio": junk}))
    assert err.code is ErrorCode.INVALID_REFERENCE_AUDIO
    assert "WAV" in err.message


def test_reference_audio_over_its_cap_is_invalid_reference_audio() -> None:
    """A WAV over max_reference_audio_bytes is rejected before and after base64 decoding."""
    limits = ProtocolLimits(max_reference_audio_bytes=1000)
    fits = wav_b64(b"\x00\x00" * 400)  # 844 bytes of WAV
    assert isinstance(
        parse({"type": "SessionStart", "reference_audio": fits}, limits), SessionStart
    )
    over = wav_b64(b"\x00\x00" * 600)
    err = error_of(json.dumps({"type": "SessionStart", "reference_audio": over}), limits)
    assert err.code is ErrorCode.INVALID_REFERENCE_AUDIO
    assert "1000" in err.message


def test_default_reference_audio_cap_fits_in_the_default_message_size() -> None:
    """A reference WAV exactly at the default cap still fits in one default-sized message."""
    wav_len = LIMITS.max_reference_audio_bytes
    pcm = b"\x00\x00" * ((wav_len - 44) // 2)
    msg = SessionStart(reference_audio=PcmFrame(pcm=pcm, sample_rate=16000))
    raw = msg.to_json()
    assert len(raw.encode()) <= LIMITS.max_message_bytes
    assert parse_client_message(raw, LIMITS) == msg


@pytest.mark.parametrize(
    "message",
    [
        SessionStarted(session_id="s1", model_id="m", worker="w@0", sample_rate=24000),
        AudioEnd(utterance=3),
        Error(code=ErrorCode.NO_WORKER_AVAILABLE, message="no worker speaks xx"),
        WorkerFailover(from_worker="a", to_worker="b"),
        SessionEnded(reason="idle_timeout"),
    ],
)
def test_server_messages_round_trip_through_json(message: Any) -> None:
    """Every server message serializes with its "type" and parses back equal."""
    data = json.loads(message.to_json())
    assert data["type"] == type(message).__name__
    assert parse_server_message(message.to_json()) == message


def test_worker_failover_uses_from_and_to_keys() -> None:
    """WorkerFailover's JSON keys are the issue's "from" and "to"."""
    data = json.loads(WorkerFailover(from_worker="a", to_worker="b").to_json())
    assert data == {"type": "WorkerFailover", "from": "a", "to": "b"}


# ---------------------------------------------------------------- property tests

_text = st.text(max_size=40)
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _text
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_type_names = st.sampled_from(["SessionStart", "TextChunk", "Control", "SessionEnd", "Other"])
_field_names = st.sampled_from(
    ["model_id", "language", "sample_rate", "capabilities", "reference_audio", "text",
     "is_final", "command", "extra"]
)  # fmt: skip
_message_like = st.builds(
    lambda kind, body: {"type": kind, **body},
    _type_names,
    st.dictionaries(_field_names, _json_values, max_size=5),
)


@settings(max_examples=400)
@given(raw=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_raw_input_parses_or_raises_protocol_error(raw: str | bytes) -> None:
    """Arbitrary text or bytes either parse into a client message or raise ProtocolError."""
    try:
        msg = parse_client_message(raw, LIMITS)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
    else:
        assert isinstance(msg, SessionStart | TextChunk | Control | SessionEnd)


@settings(max_examples=400)
@given(obj=_message_like)
def test_any_message_shaped_object_parses_or_raises_protocol_error(obj: dict[str, Any]) -> None:
    """Objects shaped like messages with arbitrary field values never raise anything else."""
    try:
        msg = parse_client_message(json.dumps(obj), ProtocolLimits(max_text_chars=20))
    except ProtocolError as exc:
        assert exc.message
    else:
        assert isinstance(msg, SessionStart | TextChunk | Control | SessionEnd)


_valid_messages: st.SearchStrategy[ClientMessage] = st.one_of(
    st.builds(
        SessionStart,
        model_id=st.none() | st.text(min_size=1, max_size=20).filter(str.strip),
        language=st.text(min_size=1, max_size=8).filter(str.strip),
        sample_rate=st.sampled_from(LIMITS.allowed_sample_rates),
        capabilities=st.lists(_text, max_size=3).map(tuple),
        reference_audio=st.none()
        | st.builds(
            PcmFrame,
            pcm=st.binary(max_size=400).map(lambda b: b[: len(b) // 2 * 2]),
            sample_rate=st.sampled_from([8000, 16000, 22050]),
        ),
    ),
    st.builds(
        TextChunk, text=st.text(max_size=LIMITS.max_text_chars // 10), is_final=st.booleans()
    ),
    st.builds(Control, command=st.sampled_from(ControlCommand)),
    st.just(SessionEnd()),
)


@settings(max_examples=300)
@given(message=_valid_messages)
def test_valid_messages_round_trip(message: ClientMessage) -> None:
    """Any valid client message serializes to JSON that parses back to an equal message."""
    assert parse_client_message(message.to_json(), LIMITS) == message


@settings(max_examples=300)
@given(data=st.binary(max_size=120), cut=st.integers(min_value=0, max_value=200))
def test_any_reference_audio_bytes_parse_or_raise_invalid_reference_audio(
    data: bytes, cut: int
) -> None:
    """Arbitrary (and corrupted-WAV) reference_audio is decoded or INVALID_REFERENCE_AUDIO."""
    good = encode_wav(b"\x01\x00" * 50, 16000)
    for blob in (data, good[:cut] + data, good[:12] + data + good[12:]):
        raw = json.dumps(
            {"type": "SessionStart", "reference_audio": base64.b64encode(blob).decode()}
        )
        try:
            parse_client_message(raw, LIMITS)
        except ProtocolError as exc:
            assert exc.code is ErrorCode.INVALID_REFERENCE_AUDIO


def test_wav_with_corrupt_chunk_size_is_invalid_reference_audio() -> None:
    """A WAV whose fmt chunk size points past the end is rejected, not a crash."""
    good = encode_wav(b"\x01\x00" * 50, 16000)
    corrupt = good[:17] + b"\xf8" + good[18:]
    raw = json.dumps(
        {"type": "SessionStart", "reference_audio": base64.b64encode(corrupt).decode()}
    )
    assert error_of(raw).code is ErrorCode.INVALID_REFERENCE_AUDIO


@settings(max_examples=20)
@given(depth=st.integers(min_value=1000, max_value=30000))
def test_deeply_nested_json_is_invalid_message_not_a_crash(depth: int) -> None:
    """Pathologically nested JSON (under the size limit) is INVALID_MESSAGE."""
    raw = "[" * depth + "]" * depth
    assert error_of(raw).code is ErrorCode.INVALID_MESSAGE
