"""The client protocol: parsing, validation, error codes and JSON round trips."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from duplex.audio.frames import PcmFrame
from duplex.audio.wav import encode_wav
from duplex.orchestrator import errors
from duplex.orchestrator.protocol import (
    AudioEnd,
    BargeIn,
    BargeInEnd,
    BargeInOptions,
    BargeInPolicy,
    ClientMessage,
    Control,
    ControlCommand,
    Error,
    ErrorCode,
    HeardPrecision,
    ProtocolError,
    ProtocolLimits,
    SessionEnd,
    SessionEnded,
    SessionStart,
    SessionStarted,
    TextChunk,
    Transcript,
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
    """Each other client message type parses into its message class."""
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
        BargeIn(
            utterance=2,
            at_ms=1340,
            heard_chars=17,
            heard_text="Hello there, how ",
            heard_precision=HeardPrecision.ESTIMATE,
            latency_ms=31.5,
        ),
        BargeInEnd(resumed=True),
        BargeInEnd(resumed=False),
        Transcript(text="stop please", utterance=1),
        Transcript(text="hello"),
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
     "is_final", "command", "input_sample_rate", "barge_in", "extra"]
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
        input_sample_rate=st.none() | st.sampled_from(LIMITS.allowed_sample_rates),
        barge_in=st.none()
        | st.builds(
            BargeInOptions,
            enabled=st.none() | st.booleans(),
            policy=st.none() | st.sampled_from(BargeInPolicy),
            min_speech_ms=st.none() | st.integers(20, 5000),
            min_silence_ms=st.none() | st.integers(20, 10000),
            false_interruption_ms=st.none() | st.integers(0, 10000),
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


# ---------------------------------------------------------------- errors


def test_protocol_error_is_a_duplex_error_printed_as_code_and_message() -> None:
    """ProtocolError derives from the one root error; str() is "CODE: message"."""
    err = ProtocolError(ErrorCode.INVALID_AUDIO, "frame of 7 bytes")
    assert isinstance(err, errors.DuplexError)
    assert (err.code, err.message) == (ErrorCode.INVALID_AUDIO, "frame of 7 bytes")
    assert str(err) == "INVALID_AUDIO: frame of 7 bytes"
    assert ErrorCode is errors.ErrorCode


def test_error_codes_for_audio_keys_and_sessions_exist_and_idle_timeout_is_gone() -> None:
    """The codes barge-in and the agent's channel need exist; the unused IDLE_TIMEOUT does not."""
    assert {"INVALID_AUDIO", "UNAUTHORIZED", "UNKNOWN_SESSION"} <= {c.value for c in ErrorCode}
    assert "IDLE_TIMEOUT" not in ErrorCode.__members__


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"type": "TextChunk", "text": 5}, "TextChunk: field 'text' must be a string, not int"),
        ({"type": "TextChunk"}, "TextChunk: missing required field 'text'"),
        ({"type": "TextChunk", "text": "a", "x": 1, "y": 2},
         "TextChunk: unknown field 'x' (and 1 more)"),
        ({"type": "SessionStart", "language": " "},
         "SessionStart: field 'language' must not be empty"),
        ({"type": "SessionStart", "sample_rate": True},
         "SessionStart: field 'sample_rate' must be an integer, not bool"),
        ({"type": "SessionStart", "capabilities": ["a", 2]},
         "SessionStart: field 'capabilities' must be a list of strings; item 1 is int"),
        ({"type": "Control", "command": "REWIND"},
         "Control: field 'command' must be one of: PAUSE, RESUME, STOP, not 'REWIND'"),
        ({"type": "SessionStart", "barge_in": {"min_speech_ms": 5}},
         "SessionStart: field 'barge_in.min_speech_ms' must be an integer from 20 to 5000, not 5"),
        ({"type": "SessionStart", "barge_in": {"mode": 1}},
         "SessionStart: unknown field 'barge_in.mode'"),
        ({"type": "Hello"}, 'unknown message type "Hello"; '
         "expected one of: SessionStart, TextChunk, Control, SessionEnd"),
        ([1], 'message must be a JSON object with a "type" field'),
    ],
)  # fmt: skip
def test_error_messages_name_the_message_type_and_the_field(obj: Any, message: str) -> None:
    """Schema violations are told in the protocol's words: message type, field, what was wrong."""
    err = error_of(json.dumps(obj))
    assert (err.code, err.message) == (ErrorCode.INVALID_MESSAGE, message)


def test_non_utf8_bytes_and_lone_surrogates_are_not_utf8_text() -> None:
    """Bytes that are not UTF-8, or a str holding a lone surrogate, say so."""
    for raw in (
        b'{"type": "TextChunk", "text": "\xff"}',
        '{"type": "TextChunk", "text": "\ud800"}',
    ):
        err = error_of(raw)
        assert (err.code, err.message) == (ErrorCode.INVALID_MESSAGE, "message is not UTF-8 text")


def test_a_number_beyond_any_range_is_invalid_message_naming_the_field() -> None:
    """1e400 (not even a float) is INVALID_MESSAGE naming where it was."""
    err = error_of('{"type": "SessionStart", "sample_rate": 1e400}')
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert "'sample_rate'" in err.message


def test_null_is_final_means_not_final() -> None:
    """An explicit null is_final is the default, false."""
    assert parse({"type": "TextChunk", "text": "a", "is_final": None}) == TextChunk("a", False)


# ---------------------------------------------------------------- mic rate and barge-in options


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_input_sample_rate_sets_the_mic_rate(rate: int) -> None:
    """input_sample_rate is kept and is the rate of the client's mic frames."""
    msg = parse({"type": "SessionStart", "sample_rate": 24000, "input_sample_rate": rate})
    assert isinstance(msg, SessionStart)
    assert (msg.input_sample_rate, msg.input_rate, msg.sample_rate) == (rate, rate, 24000)


def test_without_input_sample_rate_the_mic_comes_at_the_output_rate() -> None:
    """No (or a null) input_sample_rate: mic frames come at the session's sample_rate."""
    for rate in ({}, {"input_sample_rate": None}):
        msg = parse({"type": "SessionStart", "sample_rate": 16000, **rate})
        assert isinstance(msg, SessionStart)
        assert (msg.input_sample_rate, msg.input_rate) == (None, 16000)


@pytest.mark.parametrize("rate", [8000, 44100, 0, -16000])
def test_input_sample_rate_not_allowed_is_invalid_sample_rate(rate: int) -> None:
    """An input_sample_rate outside the allowed rates is INVALID_SAMPLE_RATE naming the field."""
    err = error_of(json.dumps({"type": "SessionStart", "input_sample_rate": rate}))
    assert err.code is ErrorCode.INVALID_SAMPLE_RATE
    assert "input_sample_rate" in err.message and "16000, 24000, 48000" in err.message


@pytest.mark.parametrize("value", ["16000", True, 16000.0, [16000]])
def test_ill_typed_input_sample_rate_is_invalid_message(value: Any) -> None:
    """An input_sample_rate that is not an integer is INVALID_MESSAGE naming it."""
    err = error_of(json.dumps({"type": "SessionStart", "input_sample_rate": value}))
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert "'input_sample_rate'" in err.message


def test_barge_in_options_parse_into_typed_overrides() -> None:
    """Every barge_in field parses, the policy into its enum."""
    options = {"enabled": True, "policy": "resume", "min_speech_ms": 120, "min_silence_ms": 300,
               "false_interruption_ms": 1500}  # fmt: skip
    msg = parse({"type": "SessionStart", "barge_in": options})
    assert isinstance(msg, SessionStart)
    assert msg.barge_in == BargeInOptions(True, BargeInPolicy.RESUME, 120, 300, 1500)
    assert msg.barge_in.policy is BargeInPolicy.RESUME


def test_barge_in_fields_left_out_or_null_are_none() -> None:
    """Each barge_in field is optional; null or absent means "use the configuration"."""
    msg = parse({"type": "SessionStart", "barge_in": {"policy": None, "enabled": False}})
    assert isinstance(msg, SessionStart)
    assert msg.barge_in == BargeInOptions(enabled=False)
    assert parse({"type": "SessionStart", "barge_in": {}}) == SessionStart(
        barge_in=BargeInOptions()
    )
    assert parse({"type": "SessionStart", "barge_in": None}) == SessionStart()


@pytest.mark.parametrize(
    ("field", "value"),
    [("min_speech_ms", 20), ("min_speech_ms", 5000), ("min_silence_ms", 20),
     ("min_silence_ms", 10000), ("false_interruption_ms", 0), ("false_interruption_ms", 10000)],
)  # fmt: skip
def test_barge_in_bounds_are_inclusive(field: str, value: int) -> None:
    """The documented bounds themselves are accepted."""
    msg = parse({"type": "SessionStart", "barge_in": {field: value}})
    assert isinstance(msg, SessionStart) and msg.barge_in is not None
    assert getattr(msg.barge_in, field) == value


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"min_speech_ms": 19}, "barge_in.min_speech_ms"),
        ({"min_speech_ms": 5001}, "barge_in.min_speech_ms"),
        ({"min_speech_ms": 100.0}, "barge_in.min_speech_ms"),
        ({"min_speech_ms": True}, "barge_in.min_speech_ms"),
        ({"min_speech_ms": "100"}, "barge_in.min_speech_ms"),
        ({"min_silence_ms": 19}, "barge_in.min_silence_ms"),
        ({"min_silence_ms": 10001}, "barge_in.min_silence_ms"),
        ({"false_interruption_ms": -1}, "barge_in.false_interruption_ms"),
        ({"false_interruption_ms": 10001}, "barge_in.false_interruption_ms"),
        ({"policy": "pause"}, "barge_in.policy"),
        ({"policy": "STOP"}, "barge_in.policy"),
        ({"policy": 1}, "barge_in.policy"),
        ({"enabled": "yes"}, "barge_in.enabled"),
        ({"enabled": 1}, "barge_in.enabled"),
        ({"aggressiveness": 3}, "barge_in.aggressiveness"),
        ([], "barge_in"),
        ("stop", "barge_in"),
    ],
)
def test_bad_barge_in_values_are_invalid_message_naming_the_field(options: Any, field: str) -> None:
    """Out-of-range, ill-typed or unknown barge_in values are INVALID_MESSAGE naming the field."""
    err = error_of(json.dumps({"type": "SessionStart", "barge_in": options}))
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert repr(field) in err.message


def test_session_start_with_every_new_field_round_trips() -> None:
    """input_sample_rate and barge_in survive to_json -> parse."""
    msg = SessionStart(
        model_id="m",
        sample_rate=24000,
        input_sample_rate=16000,
        barge_in=BargeInOptions(policy=BargeInPolicy.STOP, min_silence_ms=400),
    )
    data = json.loads(msg.to_json())
    assert data["input_sample_rate"] == 16000
    assert data["barge_in"] == {"policy": "stop", "min_silence_ms": 400}
    assert parse_client_message(msg.to_json(), LIMITS) == msg


# ---------------------------------------------------------------- new server messages


def test_barge_in_json_has_the_issue_fields() -> None:
    """BargeIn carries utterance, at_ms, heard_chars, heard_text, heard_precision, latency_ms."""
    msg = BargeIn(0, 480, 5, "Hello", HeardPrecision.CLAUSE, 24.0)
    assert json.loads(msg.to_json()) == {
        "type": "BargeIn", "utterance": 0, "at_ms": 480, "heard_chars": 5,
        "heard_text": "Hello", "heard_precision": "clause", "latency_ms": 24.0,
    }  # fmt: skip


def test_barge_in_end_and_transcript_json() -> None:
    """BargeInEnd says whether the utterance resumed; Transcript carries a null utterance."""
    assert json.loads(BargeInEnd(resumed=True).to_json()) == {"type": "BargeInEnd", "resumed": True}
    assert json.loads(Transcript("hi").to_json()) == {
        "type": "Transcript", "text": "hi", "utterance": None,
    }  # fmt: skip


def test_policy_and_precision_are_string_enums_with_wire_values() -> None:
    """The enums' values are exactly what travels."""
    assert [p.value for p in BargeInPolicy] == ["stop", "resume"]
    assert [p.value for p in HeardPrecision] == ["clause", "estimate", "alignment"]
    assert BargeInPolicy("resume") == "resume"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"type": "BargeIn", "utterance": 0}', "at_ms"),
        ('{"type": "BargeIn", "utterance": 0, "at_ms": 1, "heard_chars": 0, "heard_text": "",'
         ' "heard_precision": "exact", "latency_ms": 1}', "heard_precision"),
        ('{"type": "BargeInEnd", "resumed": "yes"}', "resumed"),
        ('{"type": "Transcript", "text": "a", "utterance": "0"}', "utterance"),
        ('{"type": "Error", "code": "NOPE", "message": "x"}', "code"),
        ('{"type": "AudioEnd", "utterance": 0, "extra": 1}', "extra"),
    ],
)  # fmt: skip
def test_bad_server_messages_are_invalid_message_naming_the_field(raw: str, field: str) -> None:
    """parse_server_message refuses bad server messages, naming the field."""
    with pytest.raises(ProtocolError) as info:
        parse_server_message(raw)
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    assert repr(field) in info.value.message


def test_unknown_server_message_type_lists_the_known_ones() -> None:
    """An unknown server type is INVALID_MESSAGE naming the server's message types."""
    with pytest.raises(ProtocolError) as info:
        parse_server_message('{"type": "SessionStart"}')
    for known in ("SessionStarted", "BargeIn", "BargeInEnd", "Transcript"):
        assert known in info.value.message


_barge_in_fields = st.sampled_from(
    ["enabled", "policy", "min_speech_ms", "min_silence_ms", "false_interruption_ms", "other"]
)
_finite_json_values = st.recursive(  # JSON proper: json.dumps writes NaN and inf as non-JSON
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
    | st.sampled_from(["stop", "resume"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300)
@given(
    options=st.dictionaries(_barge_in_fields, _finite_json_values, max_size=4) | _finite_json_values
)
def test_any_barge_in_value_parses_or_is_invalid_message(options: Any) -> None:
    """Arbitrary barge_in values give a SessionStart or INVALID_MESSAGE, nothing else."""
    try:
        msg = parse({"type": "SessionStart", "barge_in": options})
    except ProtocolError as exc:
        assert exc.code is ErrorCode.INVALID_MESSAGE
        assert "barge_in" in exc.message
    else:
        assert isinstance(msg, SessionStart)
