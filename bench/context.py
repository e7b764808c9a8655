"""What every benchmark gets: the texts, quick mode, a work folder, printing."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import Section, Table

TEXTS_PATH = Path(__file__).resolve().parent / "texts.txt"


def load_texts(path: Path = TEXTS_PATH) -> tuple[str, ...]:
    """The 20 fixed benchmark texts (one per line)."""
    return tuple(t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip())


@dataclass
class BenchContext:
    """Shared by the benchmarks of one `make bench` run."""

    quick: bool
    texts: tuple[str, ...]
    workdir: Path
    started: float = field(default_factory=time.perf_counter)
    # Figures one benchmark leaves for another in the same run (e.g. the worker alone).
    shared: dict[str, Any] = field(default_factory=dict)

    def say(self, line: str = "") -> None:
        print(line, flush=True)

    def progress(self, message: str) -> None:
        print(
            f"  [{time.perf_counter() - self.started:6.1f}s] {message}", file=sys.stdout, flush=True
        )

    def table(
        self, section: Section, title: str, columns: Sequence[str], *, first_width: int = 8
    ) -> Table:
        table = Table(title, columns, self.say, first_width=first_width)
        section.tables.append(table)
        return table

    @property
    def warmups(self) -> int:
        return 1 if self.quick else 2

    def bench_texts(self) -> tuple[str, ...]:
        """All 20 texts, or 3 in quick mode."""
        return self.texts[:3] if self.quick else self.texts
