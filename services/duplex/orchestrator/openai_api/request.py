"""The `/v1/audio/speech` body, checked and resolved against the live fleet.

`model` and `voice` name a fleet model. OpenAI's own names (`tts-1`, `alloy`, ...) are
accepted as aliases of the configured default voice, so that clients work with their
defaults; a fleet model named in `voice` wins over one named in `model`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from duplex.orchestrator.openai_api.encoders import ResponseFormat
from duplex.orchestrator.openai_api.errors import ApiError, bad_request

MAX_INPUT_CHARS = 4096
MAX_BODY_BYTES = 64 * 1024
MIN_SPEED, MAX_SPEED = 0.25, 4.0

OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx",
    "sage", "shimmer", "verse",
)  # fmt: skip


_E = TypeVar("_E", bound=StrEnum)


class StreamFormat(StrEnum):
    AUDIO = "audio"
    SSE = "sse"


@dataclass(frozen=True)
class SpeechParams:
    """A valid request: the fleet model chosen, and how to send its audio."""

    text: str
    model_id: str
    language: str
    response_format: ResponseFormat
    stream_format: StreamFormat
    speed: float


def parse_body(raw: bytes) -> Mapping[str, object]:
    if len(raw) > MAX_BODY_BYTES:
        raise bad_request(f"the body is over {MAX_BODY_BYTES} bytes", None, "body_too_large")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the body must be a JSON object", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object", None, "invalid_json")
    return body


def _text(body: Mapping[str, object], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise bad_request(f"'{key}' is required", key, "missing_required_parameter")
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{key}' must be a string", key, "invalid_type")
    return value


def _voice(body: Mapping[str, object]) -> str:
    value = body.get("voice")
    if isinstance(value, dict):  # the newer API's {"id": "..."} form
        value = value.get("id")
    if value is None:
        raise bad_request("'voice' is required", "voice", "missing_required_parameter")
    if not isinstance(value, str) or not value:
        raise bad_request("'voice' must be a non-empty string", "voice", "invalid_type")
    return value


def _enum(
    body: Mapping[str, object], key: str, kind: type[_E], default: _E, allowed: Sequence[_E]
) -> _E:
    raw = body.get(key)
    if raw is None:
        return default
    names = ", ".join(a.value for a in allowed)
    if not isinstance(raw, str) or raw not in {a.value for a in allowed}:
        raise bad_request(f"'{key}' must be one of {names}; got {raw!r}", key)
    return kind(raw)


def _speed(body: Mapping[str, object]) -> float:
    raw = body.get("speed", 1.0)
    if raw is None:
        return 1.0
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise bad_request("'speed' must be a number", "speed", "invalid_type")
    speed = float(raw)
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise bad_request(f"'speed' must be within {MIN_SPEED} and {MAX_SPEED}; got {raw}", "speed")
    return speed


def resolve_model(
    model: str | None,
    voice: str,
    fleet: Sequence[Mapping[str, object]],
    default_voice: str,
) -> tuple[str, str]:
    """(fleet model id, its language) for `model` and `voice`; ApiError 404/503 if none."""
    by_id = {str(m["id"]): m for m in fleet}
    if model is not None and model not in by_id and not _openai_model(model):
        known = ", ".join([*by_id, *OPENAI_MODELS])
        raise ApiError(404, f"unknown model {model!r}; known: {known}", param="model",
                       code="model_not_found")  # fmt: skip
    if voice in by_id:
        chosen = voice
    elif voice.lower() in OPENAI_VOICES:
        chosen = model if model in by_id else default_voice or _first_english(fleet)
    else:
        known = ", ".join([*by_id, *OPENAI_VOICES])
        raise ApiError(404, f"unknown voice {voice!r}; known: {known}", param="voice",
                       code="voice_not_found")  # fmt: skip
    if chosen not in by_id:
        what = f"the default voice {chosen!r}" if chosen else "any model"
        raise ApiError(503, f"no live worker offers {what}", type="server_error",
                       code="no_worker_available")  # fmt: skip
    return chosen, str(by_id[chosen].get("language") or "en")


def _openai_model(name: str) -> bool:
    return any(name == m or name.startswith(m + "-") for m in OPENAI_MODELS)


def _first_english(fleet: Sequence[Mapping[str, object]]) -> str:
    """With no default voice configured: the first English model, else the first one."""
    for model in fleet:
        if str(model.get("language", "")).startswith("en"):
            return str(model["id"])
    return str(fleet[0]["id"]) if fleet else ""


def parse_speech(
    raw: bytes,
    fleet: Sequence[Mapping[str, object]],
    *,
    default_voice: str,
    formats: Sequence[ResponseFormat],
) -> SpeechParams:
    """A checked request, or ApiError (400 bad input, 404 unknown model or voice, 503)."""
    body = parse_body(raw)
    text = _text(body, "input", required=True)
    assert text is not None
    if not text.strip():
        raise bad_request("'input' is empty", "input", "empty_string")
    if len(text) > MAX_INPUT_CHARS:
        raise bad_request(
            f"'input' is {len(text)} characters; the limit is {MAX_INPUT_CHARS}",
            "input",
            "string_above_max_length",
        )
    model = _text(body, "model", required=False)
    voice = _voice(body)
    _text(body, "instructions", required=False)  # accepted; no fleet model takes it
    fmt = _enum(body, "response_format", ResponseFormat, ResponseFormat.MP3, formats)
    stream = _enum(body, "stream_format", StreamFormat, StreamFormat.AUDIO, list(StreamFormat))
    speed = _speed(body)
    model_id, language = resolve_model(model, voice, fleet, default_voice)
    return SpeechParams(text, model_id, language, fmt, stream, speed)
