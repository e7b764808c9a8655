"""The speech a worker streams over gRPC is intelligible: Whisper tiny.en transcribes it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.integration.speech_check import load_whisper, word_error_rate
from tests.integration.worker_fixtures import piper_config, running_worker, synthesize

# Two sentences and a comma: the worker splits them into clauses, so the test also covers
# the seams between separately synthesized, resampled and framed clauses.
SENTENCE = (
    "The quick brown fox jumps over the lazy dog. "
    "Please bring your notes to the meeting, and arrive early."
)


def test_word_error_rate_counts_substitutions_insertions_and_deletions() -> None:
    """The WER helper itself: 0 for equal text, 1/4 per edit on four words."""
    assert word_error_rate("The fox, jumps!", "the fox jumps") == 0.0
    assert word_error_rate("a b c d", "a x c d") == 0.25
    assert word_error_rate("a b c d", "a b c") == 0.25
    assert word_error_rate("a b c d", "a b c d e") == 0.25


@pytest.fixture(scope="module")
def whisper() -> Any:
    return load_whisper()


async def test_piper_speech_from_the_worker_is_transcribed_with_at_most_10_percent_wer(
    redis_url: str, whisper: Any
) -> None:
    """16 kHz frames from the worker, joined, read by Whisper tiny.en: WER <= 10%."""
    async with running_worker(piper_config(redis_url)) as worker:
        got = await synthesize(worker.stub, SENTENCE, sample_rate=16000, lead_ms=0)
    assert got.ends and got.ends[0].voiced_length == len(SENTENCE)
    audio = np.frombuffer(got.pcm, dtype="<i2").astype(np.float32) / 32768.0
    segments, _ = whisper.transcribe(audio, language="en", beam_size=1)
    text = " ".join(segment.text for segment in segments)
    assert word_error_rate(SENTENCE, text) <= 0.10, text
