"""Clause segmentation: invariants for any text split into any pushes, plus examples."""

from __future__ import annotations

import pytest
from duplex.text import Clause, ClauseSegmenter
from hypothesis import given, settings
from hypothesis import strategies as st

_ALPHABET = list("abZé1 \n\t.,!?;:…\"')") + list("。、！？，「」") + ["😀"]  # noqa: RUF001

texts = st.text(alphabet=st.sampled_from(_ALPHABET), max_size=300)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(text)]:
        pieces.append(text[last:p])
        last = p
    return pieces


def _run(pieces: list[str], min_chars: int = 12, max_chars: int = 220) -> list[Clause]:
    seg = ClauseSegmenter(min_chars=min_chars, max_chars=max_chars)
    out: list[Clause] = []
    for piece in pieces:
        out.extend(seg.push(piece))
    out.extend(seg.finish())
    return out


def _words(text: str) -> list[str]:
    """Word-by-word pieces the way a language model streams them (leading space)."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


@settings(max_examples=300, deadline=None)
@given(
    text=texts,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    min_chars=st.integers(min_value=0, max_value=20),
    max_chars=st.integers(min_value=1, max_value=60),
)
def test_any_split_keeps_text_offsets_and_limits(
    text: str, cuts: list[int], min_chars: int, max_chars: int
) -> None:
    """Clauses concatenate to the input, offsets are contiguous, no clause exceeds max_chars."""
    clauses = _run(_split(text, cuts), min_chars, max_chars)
    assert "".join(c.text for c in clauses) == text
    position = 0
    for c in clauses:
        assert c.start == position
        assert c.end - c.start == len(c.text)
        assert text[c.start : c.end] == c.text
        assert c.text != ""
        assert len(c.text.strip()) <= max_chars
        position = c.end
    assert position == len(text)
    assert all(not c.is_blank for c in clauses[:-1])


@settings(max_examples=300, deadline=None)
@given(
    text=texts,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    max_chars=st.integers(min_value=1, max_value=60),
)
def test_split_does_not_change_where_clauses_end(
    text: str, cuts: list[int], max_chars: int
) -> None:
    """Pushing in pieces finds the same clauses as one push (only whitespace may move)."""
    pieces = _run(_split(text, cuts), max_chars=max_chars)
    whole = _run([text], max_chars=max_chars)
    assert [c.text.strip() for c in pieces if not c.is_blank] == [
        c.text.strip() for c in whole if not c.is_blank
    ]


@settings(max_examples=200, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_push_never_returns_a_blank_clause(text: str, cuts: list[int]) -> None:
    """Only finish() may return a whitespace-only clause."""
    seg = ClauseSegmenter()
    for piece in _split(text, cuts):
        assert all(not c.is_blank for c in seg.push(piece))


def test_word_by_word_emits_first_clause_before_finish() -> None:
    """Streaming words, "Hello there, " comes out as soon as the next word shows the boundary."""
    seg = ClauseSegmenter()
    emitted: list[list[str]] = [
        [c.text for c in seg.push(w)] for w in _words("Hello there, how are you?")
    ]
    assert emitted == [[], [], ["Hello there, "], [], []]
    assert [c.text for c in seg.finish()] == ["how are you?"]


def test_sentence_end_waits_for_the_following_whitespace() -> None:
    """ "Hello." may be followed by more ("Hello.com"), so it waits; "Hello. " is complete."""
    seg = ClauseSegmenter()
    assert seg.push("Hello.") == []
    assert seg.push(" ") == [Clause("Hello. ", 0, 7)]
    assert seg.push("World") == []
    assert seg.finish() == [Clause("World", 7, 12)]


def test_dot_followed_by_text_is_not_a_boundary() -> None:
    """A period not followed by whitespace (an address) keeps the clause going."""
    assert [c.text for c in _run(["Visit example.com now. Thanks"])] == [
        "Visit example.com now. ",
        "Thanks",
    ]


def test_whitespace_after_a_boundary_belongs_to_the_clause_before() -> None:
    """The whole whitespace run received with the punctuation stays with its clause."""
    assert [c.text for c in _run(["One.  \n Two! Three"])] == ["One.  \n ", "Two! ", "Three"]


def test_whitespace_in_a_later_push_starts_the_next_clause() -> None:
    """Once a clause is handed on, further whitespace can only lead the next one."""
    seg = ClauseSegmenter()
    assert [c.text for c in seg.push("One. ")] == ["One. "]
    assert seg.push("  ") == []
    assert [c.text for c in seg.push("Two. Three")] == ["  Two. "]
    assert [c.text for c in seg.finish()] == ["Three"]


def test_numbers_do_not_split() -> None:
    """Decimal points and thousands separators are no boundaries."""
    text = "It costs 3.5 dollars or 1,000 yen in total. Fine"
    assert [c.text for c in _run([text])] == [
        "It costs 3.5 dollars or 1,000 yen in total. ",
        "Fine",
    ]


def test_abbreviations_do_not_end_a_sentence() -> None:
    """Titles and e.g. followed by a space stay inside the sentence."""
    text = "Ask Dr. Smith or Mrs. Jones, e.g. by mail. Then wait"
    assert [c.text for c in _run([text], min_chars=40)] == [
        "Ask Dr. Smith or Mrs. Jones, e.g. by mail. ",
        "Then wait",
    ]


def test_clause_punctuation_needs_min_chars() -> None:
    """A comma ends a clause only once the clause is long enough."""
    assert [c.text for c in _run(["Hi, there, my good friend; yes"], min_chars=12)] == [
        "Hi, there, my good friend; ",
        "yes",
    ]
    assert [c.text for c in _run(["Hi, there"], min_chars=0)] == ["Hi, ", "there"]


def test_sentence_punctuation_needs_no_min_chars() -> None:
    """Short sentences are clauses of their own (first audio as early as possible)."""
    assert [c.text for c in _run(["Hi! Yes. Ok? Go"])] == ["Hi! ", "Yes. ", "Ok? ", "Go"]


def test_closing_quotes_stay_with_the_punctuation() -> None:
    """A quote or bracket after the period is part of the clause it closes."""
    assert [c.text for c in _run(['He said "stop." Then (he left.) Done'])] == [
        'He said "stop." ',
        "Then (he left.) ",
        "Done",
    ]


def test_punctuation_alone_is_merged_into_the_next_clause() -> None:
    """A clause needs a letter or digit: "... " alone is not spoken separately."""
    assert [c.text for c in _run(["... ?! Well okay. Yes"])] == ["... ?! Well okay. ", "Yes"]


def test_japanese_splits_without_whitespace() -> None:
    """。！？ end a clause with no whitespace; 、 once the clause is long enough."""  # noqa: RUF002
    text = "こんにちは。元気ですか？はい、元気です。ありがとうございました、本当に。"  # noqa: RUF001
    clauses = [c.text for c in _run([text], min_chars=5)]
    assert clauses == [
        "こんにちは。",
        "元気ですか？",  # noqa: RUF001
        "はい、元気です。",
        "ありがとうございました、",
        "本当に。",
    ]


def test_japanese_full_stop_waits_for_a_closing_quote() -> None:
    """「…。」 keeps the closing bracket: the clause waits until the next character."""
    seg = ClauseSegmenter()
    assert seg.push("「はい。") == []
    assert seg.push("」") == []
    assert [c.text for c in seg.push("次")] == ["「はい。」"]
    assert [c.text for c in seg.finish()] == ["次"]


def test_long_run_is_cut_at_the_last_whitespace() -> None:
    """With no punctuation, a run over max_chars is cut after the last whole word."""
    seg = ClauseSegmenter(max_chars=20)
    out = seg.push("aaaa bbbb cccc dddd eeee ffff")
    assert [c.text for c in out] == ["aaaa bbbb cccc dddd "]
    assert [c.text for c in seg.finish()] == ["eeee ffff"]


def test_long_word_is_cut_hard_at_max_chars() -> None:
    """A run with no whitespace at all is cut at exactly max_chars."""
    clauses = _run(["x" * 45], max_chars=20)
    assert [len(c.text) for c in clauses] == [20, 20, 5]


def test_offsets_count_code_points() -> None:
    """An emoji outside the BMP counts as one position."""
    clauses = _run(["I 😀 you. Bye"])
    assert clauses == [Clause("I 😀 you. ", 0, 9), Clause("Bye", 9, 12)]


def test_trailing_whitespace_at_finish_is_a_blank_clause() -> None:
    """Whitespace pushed after the last clause comes back from finish() as a blank clause."""
    seg = ClauseSegmenter()
    assert [c.text for c in seg.push("Done. ")] == ["Done. "]
    assert seg.push("  ") == []
    rest = seg.finish()
    assert rest == [Clause("  ", 6, 8)]
    assert rest[0].is_blank


def test_finish_with_nothing_pending_returns_nothing() -> None:
    """An utterance that ended on a boundary has no rest; a second finish() is empty too."""
    seg = ClauseSegmenter()
    seg.push("Done. ")
    assert seg.finish() == []
    assert seg.finish() == []


def test_push_after_finish_is_an_error() -> None:
    """A segmenter serves one utterance."""
    seg = ClauseSegmenter()
    seg.finish()
    with pytest.raises(RuntimeError, match="new ClauseSegmenter"):
        seg.push("more")


def test_invalid_limits_are_rejected() -> None:
    """max_chars below 1 or a negative min_chars is a configuration error."""
    with pytest.raises(ValueError, match="max_chars"):
        ClauseSegmenter(max_chars=0)
    with pytest.raises(ValueError, match="min_chars"):
        ClauseSegmenter(min_chars=-1)


def test_a_long_first_clause_is_cut_at_a_word_within_first_max_chars() -> None:
    """first_max_chars shortens only the opening clause, at a word boundary."""
    text = (
        "The train to Boston has been delayed by about twenty minutes because of a signal "
        "problem near the station. It leaves from platform four."
    )
    seg = ClauseSegmenter(first_max_chars=40)
    clauses = seg.push(text) + seg.finish()
    assert clauses[0].text == "The train to Boston has been delayed by "
    assert clauses[1].text.startswith("about twenty minutes because of a signal problem")
    assert clauses[1].text.endswith("station. ")
    assert "".join(c.text for c in clauses) == text


def test_first_max_chars_leaves_a_short_first_clause_alone() -> None:
    """An opening clause already under the limit is not cut."""
    text = "Hello there, friend. The meeting starts at nine."
    short, plain = ClauseSegmenter(first_max_chars=40), ClauseSegmenter()
    assert short.push(text) + short.finish() == plain.push(text) + plain.finish()


def test_first_max_chars_applies_word_by_word() -> None:
    """Pushed word by word, the shortened first clause is handed on before the sentence ends."""
    seg = ClauseSegmenter(first_max_chars=30)
    words = "Please remember to back up all of your work before installing the update.".split(" ")
    emitted: list[str] = []
    for i, word in enumerate(words):
        emitted += [c.text for c in seg.push(word if i == 0 else " " + word)]
        if emitted:
            break
    assert emitted and len(emitted[0].strip()) <= 30
    assert not emitted[0].rstrip().endswith(".")
