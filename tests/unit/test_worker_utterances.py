"""A session's utterances: text to clauses in order, end markers, limits, open utterances."""

from __future__ import annotations

import pytest
from duplex.text import ClauseSegmenter
from duplex.worker.session_messages import InvalidText
from duplex.worker.utterances import Utterances


def _utterances(max_text_chars: int = 200) -> Utterances:
    return Utterances(max_text_chars, lambda: ClauseSegmenter(12, 220, None))


def test_final_text_becomes_clauses_then_an_end_marker() -> None:
    """A final chunk yields its clauses in text order and then the utterance's end."""
    utts = _utterances()
    utts.push("Hello there, my good friend. The meeting starts at nine.", is_final=True)
    work = list(utts.work)
    assert [c.text.strip() if c else None for _, c in work][-1] is None
    clauses = [c for _, c in work if c is not None]
    assert clauses and [c.start for c in clauses] == sorted(c.start for c in clauses)
    assert clauses[-1].end == len("Hello there, my good friend. The meeting starts at nine.")
    assert utts.current is None and len(utts.open) == 1


def test_chunks_join_the_current_utterance_until_it_is_final() -> None:
    """Non-final chunks grow one utterance; the next text after a final one starts another."""
    utts = _utterances()
    utts.push("Hello there, ", is_final=False)
    first = utts.current
    utts.push("my good friend.", is_final=True)
    utts.push("Again.", is_final=True)
    assert first is not None and first.text_length == len("Hello there, my good friend.")
    assert [u.index for u in utts.open] == [0, 1]
    utts.ended(utts.open[0])
    assert [u.index for u in utts.open] == [1]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([("", False)], "empty text chunk"),
        ([("", True)], "empty utterance"),
        ([("x" * 8, False), ("x" * 3, True)], "over the limit of 10"),
    ],
)
def test_bad_text_is_refused(chunks: list[tuple[str, bool]], message: str) -> None:
    """Empty chunks (other than a closing final one) and over-long utterances are InvalidText."""
    utts = _utterances(max_text_chars=10)
    with pytest.raises(InvalidText, match=message):
        for text, final in chunks:
            utts.push(text, final)


def test_an_empty_final_chunk_closes_the_open_utterance() -> None:
    """`""` with is_final ends an utterance that has text."""
    utts = _utterances()
    utts.push("Hello there", is_final=False)
    utts.push("", is_final=True)
    assert utts.current is None and utts.work[-1][1] is None


def test_after_stop_new_text_starts_a_new_utterance() -> None:
    """stop_text: the stopped utterance takes no more text."""
    utts = _utterances()
    utts.push("Hello there", is_final=False)
    utts.stop_text()
    utts.push("Next one.", is_final=True)
    assert [u.index for u in utts.open] == [0, 1]
    assert all(u.index == 1 for u, _ in list(utts.work)[-1:])
