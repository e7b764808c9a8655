"""Incremental clause segmentation, shared by the worker and the orchestrator.

Text arrives in pieces (a language model emits it word by word); each clause is
handed on as soon as its end is certain, so the first audio comes from the first
clause instead of the whole utterance.

Rules (see docs/architecture.md):

* A clause ends after sentence punctuation (``. ! ? …``) followed by whitespace, or
  after the CJK full stop, exclamation and question marks (no whitespace needed). It
  ends after clause punctuation (``, ; :`` followed by whitespace, or the CJK
  enumeration comma, comma, semicolon and colon) only once it holds at least
  ``min_chars`` characters. Closing quotes and brackets right after the punctuation stay with it.
* A boundary needs a letter or digit before it ("... " alone is merged into the next
  clause), so a period inside a number ("3.5"), in "e.g.", or after a title such as
  "Dr." is no boundary.
* Whitespace after a boundary belongs to the clause before it. ``push`` hands a clause
  on as soon as the character after its punctuation proves the boundary, with the
  whitespace received so far; whitespace that arrives in a later push starts the
  next clause. ``"".join(all clause texts) == all pushed text`` always holds and the
  offsets are contiguous code-point positions from 0.
* A run with no boundary whose text (leading whitespace aside) grows past
  ``max_chars`` is cut after the last word that ends within ``max_chars``
  characters, or hard at ``max_chars`` when it has no whitespace. So
  ``len(clause.text.strip()) <= max_chars`` for every clause.
* ``first_max_chars`` (optional) applies the same cut to an utterance's *first* clause
  at a lower limit: a long opening sentence with no comma would otherwise delay the first
  audio by the time it takes to synthesize all of it. Later clauses use ``max_chars``.
* ``finish`` returns the rest. If the rest is whitespace only (whitespace pushed after
  the last clause), it is still returned, as a *blank* clause (``Clause.is_blank``),
  so that the concatenation and offset invariants hold; callers that synthesize
  skip blank clauses. ``push`` never returns a blank clause.
"""

from __future__ import annotations

from dataclasses import dataclass

_SENTENCE = frozenset(".!?…")
_SENTENCE_CJK = frozenset("。！？")  # noqa: RUF001
_CLAUSE = frozenset(",;:")
_CLAUSE_CJK = frozenset("、，；：")  # noqa: RUF001
_PUNCT = _SENTENCE | _SENTENCE_CJK | _CLAUSE | _CLAUSE_CJK
_CLOSERS = frozenset("\"')]}”’»」』）】")  # noqa: RUF001
# Titles that are almost never the end of a sentence; "etc." often is, so it is absent.
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "vs", "e.g", "i.e", "cf"})
# Words a spoken phrase often starts with: the preferred places to cut an over-long run.
_PHRASE_STARTS = frozenset(
    "and but or so because while when where which that who after before until since "
    "if though although by with without in on at to for from of about near into over "
    "through during".split()
)


@dataclass(frozen=True)
class Clause:
    """A piece of the utterance text, with its code-point offsets in that text."""

    text: str
    start: int
    end: int

    @property
    def is_blank(self) -> bool:
        """True for a whitespace-only clause (only ``finish`` returns one)."""
        return not self.text.strip()


class ClauseSegmenter:
    """Splits one utterance's text into clauses as the text arrives."""

    def __init__(
        self, min_chars: int = 12, max_chars: int = 220, first_max_chars: int | None = None
    ) -> None:
        if min_chars < 0:
            raise ValueError(f"min_chars must be >= 0, got {min_chars}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        if first_max_chars is not None and first_max_chars < 1:
            raise ValueError(f"first_max_chars must be >= 1, got {first_max_chars}")
        self._min_chars = min_chars
        self._later_max_chars = max_chars
        self._first_max_chars = min(max_chars, first_max_chars or max_chars)
        self._emitted = False  # has a (non-blank) clause been handed on yet?
        self._pending = ""
        self._offset = 0  # utterance offset of self._pending[0]
        self._finished = False

    def push(self, text: str) -> list[Clause]:
        """Add text; return the clauses whose end is now certain."""
        if self._finished:
            raise RuntimeError("push() after finish(): use a new ClauseSegmenter per utterance")
        self._pending += text
        return self._drain(final=False)

    def finish(self) -> list[Clause]:
        """The utterance is complete: return every remaining clause."""
        if self._finished:
            return []
        self._finished = True
        return self._drain(final=True)

    @property
    def _max_chars(self) -> int:
        return self._later_max_chars if self._emitted else self._first_max_chars

    def _drain(self, *, final: bool) -> list[Clause]:
        text = self._pending
        start = 0
        out: list[Clause] = []
        while start < len(text):
            end = self._clause_end(text, start, final=final)
            if end is None:
                break
            clause = Clause(text[start:end], self._offset + start, self._offset + end)
            out.append(clause)
            self._emitted = self._emitted or not clause.is_blank
            start = end
        self._pending = text[start:]
        self._offset += start
        return out

    def _clause_end(self, text: str, start: int, *, final: bool) -> int | None:
        """End (exclusive) of the clause that starts at ``start``, or None to wait."""
        content = _skip_space(text, start)
        if content == len(text):
            return len(text) if final else None
        found = self._boundary(text, content, final=final)
        if found is not None:
            return found
        if len(text) - content > self._max_chars:
            return self._cut(text, content)
        return len(text) if final else None

    def _boundary(self, text: str, content: int, *, final: bool) -> int | None:
        """End of the first punctuation boundary whose clause fits in max_chars.

        None when there is none yet, including when the first candidate is still
        open (its punctuation run reaches the end of the text and more may follow).
        """
        n = len(text)
        limit = min(n, content + self._max_chars)
        i = content
        while i < limit:
            if text[i] not in _PUNCT:
                i += 1
                continue
            j = _skip_run(text, i)
            if j - content > self._max_chars or (j == n and not final):
                return None
            if self._is_boundary(text, content, i, j):
                return _skip_space(text, j)
            i = j
        return None

    def _is_boundary(self, text: str, content: int, i: int, j: int) -> bool:
        """Whether the punctuation run text[i:j] ends the clause that began at content."""
        last = next(c for c in reversed(text[i:j]) if c in _PUNCT)
        latin = last in _SENTENCE or last in _CLAUSE
        if latin and j < len(text) and not text[j].isspace():
            return False
        if not any(c.isalnum() for c in text[content:i]):
            return False
        if last in _CLAUSE or last in _CLAUSE_CJK:
            return j - content >= self._min_chars
        return not (text[i:j] == "." and _word_before(text, content, i) in _ABBREVIATIONS)

    def _cut(self, text: str, content: int) -> int:
        """Split an over-long run after its last word that ends within max_chars.

        A break before a conjunction or preposition ("... delayed | by about twenty
        minutes") is preferred when one lies in the second half of the limit: the voice's
        phrasing then sounds like a natural pause rather than a cut.
        """
        limit = content + self._max_chars
        fallback: int | None = None
        for k in range(limit, content, -1):
            if text[k].isspace() and not text[k - 1].isspace():
                fallback = fallback if fallback is not None else k
                if k - content < self._max_chars // 2:
                    break
                if _next_word(text, k).lower() in _PHRASE_STARTS:
                    return _skip_space(text, k)
        return limit if fallback is None else _skip_space(text, fallback)


def _next_word(text: str, i: int) -> str:
    """The word that starts after the whitespace at position i."""
    k = _skip_space(text, i)
    j = k
    while j < len(text) and text[j].isalpha():
        j += 1
    return text[k:j]


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _skip_run(text: str, i: int) -> int:
    """End of the run of punctuation and closing quotes that starts at i."""
    while i < len(text) and (text[i] in _PUNCT or text[i] in _CLOSERS):
        i += 1
    return i


def _word_before(text: str, lo: int, i: int) -> str:
    """The lower-cased word (letters and inner periods) just before position i."""
    k = i
    while k > lo and (text[k - 1].isalpha() or text[k - 1] == "."):
        k -= 1
    return text[k:i].lower()
