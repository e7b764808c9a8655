"""`speed` through the `openai` SDK: Piper speaks faster and is still understood; a model
whose workers cannot change their rate is refused with 400 naming `speed`, before audio."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.integration.openai_fixtures import (
    PIPER_MODEL,
    fleet,
    sdk,
    stream_speech,
    transcript_wer,
)
from tests.integration.speech_check import load_whisper

TEXT = "Please bring your notes to the meeting, and arrive early."


@pytest.fixture(scope="module")
def whisper() -> Any:
    return load_whisper()


async def test_piper_at_speed_two_is_about_half_as_long_and_still_understood(
    redis_url: str, whisper: Any
) -> None:
    async with fleet(redis_url, piper=True) as orch:
        client = sdk(orch)
        normal = await stream_speech(client, TEXT, response_format="pcm", voice=PIPER_MODEL)
        fast = await stream_speech(
            client, TEXT, response_format="pcm", voice=PIPER_MODEL, speed=2.0
        )
    ratio = len(fast.body) / len(normal.body)
    wer, heard = transcript_wer(whisper, fast.body, TEXT)
    print(f"\nspeed 2.0: {ratio:.2f} of the 1.0 length; heard {heard!r}")
    assert ratio < 0.75
    assert wer <= 0.2, heard


async def test_a_model_that_cannot_change_its_rate_is_refused_naming_speed(
    redis_url: str,
) -> None:
    """The test tone worker announces no speed capability."""
    async with fleet(redis_url, tone_rtf=0.0) as orch:
        with pytest.raises(openai.BadRequestError) as refused:
            await stream_speech(sdk(orch), TEXT, response_format="pcm", speed=2.0)
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "speed", body
    assert body["code"] == "unsupported_value"
