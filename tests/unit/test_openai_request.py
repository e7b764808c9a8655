"""The `/v1/audio/speech` body: parsing, the voice and model names, and the text split."""

from __future__ import annotations

import json
import struct

import pytest
from duplex.orchestrator.openai_api.encoders import ResponseFormat, wav_stream_header
from duplex.orchestrator.openai_api.errors import ApiError
from duplex.orchestrator.openai_api.request import (
    SpeechParams,
    StreamFormat,
    parse_speech,
    resolve_model,
)
from duplex.orchestrator.transports.speech_stream import split_text
from duplex.orchestrator.wyoming_server import pick_voice

FLEET = [
    {"id": "kokoro-ja", "language": "ja", "workers": ["w2"]},
    {"id": "piper-en", "language": "en", "workers": ["w1"]},
]


def parse(**body: object) -> SpeechParams:
    raw = json.dumps({"model": "tts-1", "voice": "alloy", "input": "Hi.", **body}).encode()
    return parse_speech(raw, FLEET, default_voice="", formats=list(ResponseFormat))


def test_openai_names_stand_for_the_first_english_model_when_no_default_is_set() -> None:
    assert resolve_model("tts-1", "alloy", FLEET, "") == ("piper-en", "en")
    assert resolve_model("gpt-4o-mini-tts-2025-03-20", "Nova", FLEET, "") == ("piper-en", "en")


def test_the_configured_default_voice_and_fleet_names_win() -> None:
    assert resolve_model("tts-1", "alloy", FLEET, "kokoro-ja") == ("kokoro-ja", "ja")
    assert resolve_model("piper-en", "kokoro-ja", FLEET, "") == ("kokoro-ja", "ja")
    assert resolve_model("kokoro-ja", "alloy", FLEET, "") == ("kokoro-ja", "ja")


def test_unknown_names_are_404_and_an_empty_fleet_is_503() -> None:
    for model, voice, param in (("tts-1", "nobody", "voice"), ("gpt-9", "alloy", "model")):
        with pytest.raises(ApiError) as info:
            resolve_model(model, voice, FLEET, "")
        assert (info.value.status, info.value.param) == (404, param)
    with pytest.raises(ApiError) as empty:
        resolve_model("tts-1", "alloy", [], "")
    assert empty.value.status == 503


def test_defaults_are_mp3_audio_at_speed_one() -> None:
    params = parse()
    assert params == parse(response_format="mp3", stream_format="audio", speed=1)
    assert params.response_format is ResponseFormat.MP3
    assert params.stream_format is StreamFormat.AUDIO


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": None}, "input"),
        ({"input": 3}, "input"),
        ({"voice": {"name": "x"}}, "voice"),
        ({"speed": True}, "speed"),
        ({"speed": 0.2}, "speed"),
        ({"response_format": "MP3"}, "response_format"),
    ],
)
def test_bad_fields_name_themselves(body: dict[str, object], param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse(**body)
    assert (info.value.status, info.value.param) == (400, param)


def test_a_voice_object_is_read_by_its_id() -> None:
    assert parse(voice={"id": "kokoro-ja"}).model_id == "kokoro-ja"


def test_long_text_is_split_after_clauses_and_words_within_the_limit() -> None:
    text = "One two three, four five six. Seven eight nine ten eleven."
    pieces = split_text(text, 20)
    assert "".join(pieces) == text
    assert all(len(p) <= 20 for p in pieces)
    assert pieces[0] == "One two three, "
    assert split_text("short", 20) == ["short"]
    assert "".join(split_text("x" * 45, 20)) == "x" * 45


def test_the_streamed_wav_header_says_unknown_length() -> None:
    header = wav_stream_header(24000)
    assert len(header) == 44 and header[:4] == b"RIFF" and header[36:40] == b"data"
    assert struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF
    assert struct.unpack("<IIHH", header[24:36]) == (24000, 48000, 2, 16)


def test_wyoming_picks_a_voice_by_name_then_language_then_default() -> None:
    assert pick_voice(FLEET, "kokoro-ja", None, "") == ("kokoro-ja", "ja")
    assert pick_voice(FLEET, "nobody", None, "") is None
    assert pick_voice(FLEET, None, "en_US", "") == ("piper-en", "en")
    assert pick_voice(FLEET, None, "de", "") is None
    assert pick_voice(FLEET, None, None, "kokoro-ja") == ("kokoro-ja", "ja")
    assert pick_voice(FLEET, None, None, "") == ("piper-en", "en")
