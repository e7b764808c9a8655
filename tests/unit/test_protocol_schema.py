"""The protocol's JSON Schema: the committed copy is current, and it agrees with the parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from duplex.audio.frames import PcmFrame
from duplex.orchestrator.protocol import (
    AudioEnd,
    BargeIn,
    BargeInEnd,
    BargeInOptions,
    BargeInPolicy,
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
)
from duplex.orchestrator.protocol_schema import protocol_json_schema, schema_text
from hypothesis import given, settings
from hypothesis import strategies as st

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "protocol.schema.json"
REGENERATE = (
    "docs/protocol.schema.json is stale; regenerate it with: "
    ".venv/bin/python -m duplex.orchestrator.protocol_schema "
    "> docs/protocol.schema.json"
)


def validator(direction: str) -> Any:
    """A validator for one direction's messages ("ClientMessage" or "ServerMessage")."""
    schema = protocol_json_schema()
    sub = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{direction}"}
    return jsonschema.Draft202012Validator(sub)


CLIENT = validator("ClientMessage")
SERVER = validator("ServerMessage")


def test_committed_schema_is_the_generated_one() -> None:
    """docs/protocol.schema.json is exactly what the Structs generate today."""
    assert COMMITTED.read_text(encoding="utf-8") == schema_text(), REGENERATE


def test_the_module_prints_the_schema() -> None:
    """`python -m duplex.orchestrator.protocol_schema` writes the schema to stdout."""
    out = subprocess.run(
        [sys.executable, "-m", "duplex.orchestrator.protocol_schema"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out == schema_text()


def test_schema_is_valid_draft_2020_12_with_every_message() -> None:
    """The document is a valid JSON Schema and defines every message of both directions."""
    schema = protocol_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    client = {"SessionStart", "TextChunk", "Control", "SessionEnd"}
    server = {"SessionStarted", "AudioEnd", "Error", "WorkerFailover", "SessionEnded",
              "BargeIn", "BargeInEnd", "Transcript"}  # fmt: skip
    assert client | server | {"BargeInOptions", "ErrorCode"} <= set(schema["$defs"])
    assert set(schema["$defs"]["ClientMessage"]["discriminator"]["mapping"]) == client
    assert set(schema["$defs"]["ServerMessage"]["discriminator"]["mapping"]) == server


@pytest.mark.parametrize(
    "message",
    [
        SessionStart(),
        SessionStart(
            model_id="piper-en",
            language="en",
            sample_rate=16000,
            capabilities=("zero_shot",),
            reference_audio=PcmFrame(b"\x00\x01" * 40, 16000),
            input_sample_rate=48000,
            barge_in=BargeInOptions(True, BargeInPolicy.RESUME, 20, 5000, 0),
        ),
        TextChunk("Hello there.", is_final=True),
        Control(ControlCommand.STOP),
        SessionEnd(),
    ],
)
def test_client_messages_the_code_writes_are_schema_valid(message: Any) -> None:
    """Every client message's to_json validates against ClientMessage."""
    CLIENT.validate(json.loads(message.to_json()))


@pytest.mark.parametrize(
    "message",
    [
        SessionStarted("s", "m", "w@0", 48000),
        AudioEnd(0),
        Error(ErrorCode.UNKNOWN_SESSION, "no session s"),
        WorkerFailover("a", "b"),
        SessionEnded("client_end"),
        BargeIn(1, 960, 12, "Hello there,", HeardPrecision.ALIGNMENT, 41.2),
        BargeInEnd(False),
        Transcript("stop", 1),
        Transcript("hello"),
    ],
)
def test_server_messages_are_schema_valid(message: Any) -> None:
    """Every server message's to_json validates against ServerMessage, and not ClientMessage."""
    data = json.loads(message.to_json())
    SERVER.validate(data)
    assert not CLIENT.is_valid(data)


@pytest.mark.parametrize(
    "data",
    [
        {"text": "no type"},
        {"type": "Hello"},
        {"type": "TextChunk"},
        {"type": "TextChunk", "text": 5},
        {"type": "TextChunk", "text": "a", "extra": 1},
        {"type": "SessionStart", "model_id": " "},
        {"type": "SessionStart", "sample_rate": 48000.5},
        {"type": "SessionStart", "barge_in": {"min_speech_ms": 5}},
        {"type": "SessionStart", "barge_in": {"policy": "pause"}},
        {"type": "SessionStart", "barge_in": {"unknown": 1}},
        {"type": "Control", "command": "REWIND"},
    ],
)
def test_bad_client_messages_are_schema_invalid(data: dict[str, Any]) -> None:
    """What the parser refuses as INVALID_MESSAGE, the schema refuses too."""
    assert not CLIENT.is_valid(data)
    with pytest.raises(ProtocolError):
        parse_client_message(json.dumps(data), ProtocolLimits())


_values = st.none() | st.booleans() | st.integers(-10, 60000) | st.sampled_from(
    ["", " ", "en", "stop", "resume", "STOP", "x", 16000.0]
)  # fmt: skip
_fields = st.sampled_from(
    ["model_id", "language", "sample_rate", "input_sample_rate", "capabilities", "text",
     "is_final", "command", "barge_in", "extra"]
)  # fmt: skip
_barge_in = st.dictionaries(
    st.sampled_from(["enabled", "policy", "min_speech_ms", "min_silence_ms",
                     "false_interruption_ms", "extra"]),
    _values,
    max_size=3,
)  # fmt: skip
_messages = st.builds(
    lambda kind, body: {"type": kind, **body},
    st.sampled_from(["SessionStart", "TextChunk", "Control", "SessionEnd"]),
    st.dictionaries(_fields, _values | _barge_in | st.lists(st.text(max_size=3), max_size=2),
                    max_size=4),
)  # fmt: skip


@settings(max_examples=300)
@given(data=_messages)
def test_every_message_the_parser_accepts_is_schema_valid(data: dict[str, Any]) -> None:
    """The schema never refuses a message the parser accepts, and refuses what the parser
    calls INVALID_MESSAGE (the parser adds only the checks a schema cannot state: configured
    sample rates, text length, WAV content)."""
    try:
        parse_client_message(json.dumps(data), ProtocolLimits())
    except ProtocolError as exc:
        # JSON Schema counts 16000.0 as an integer; the parser wants 16000. Otherwise what the
        # parser refuses as ill-formed, the schema refuses too.
        if exc.code is ErrorCode.INVALID_MESSAGE and "float" not in exc.message:
            assert not CLIENT.is_valid(data), exc.message
    else:
        assert CLIENT.is_valid(data)
