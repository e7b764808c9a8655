"""Tables printed as rows arrive, and the Markdown + JSON report they end up in."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent

NOISE_NOTE = (
    "These 2-core machines are noisy: differences under ~15% are noise. Every comparison "
    "in this report was measured in the same run."
)

Cell = str | int | float | None
Printer = Callable[[str], None]


def fmt(value: float | int | None, digits: int = 0) -> str:
    """A figure for a table cell: "-" when missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def verdict(ok: bool | None) -> str:
    """pass / MISS / "-" (not measured); a figure against a target, never an assertion."""
    if ok is None:
        return "-"
    return "pass" if ok else "MISS"


class Table:
    """A table whose header prints on creation and each row as it is added."""

    def __init__(
        self, title: str, columns: Sequence[str], printer: Printer, *, first_width: int = 8
    ) -> None:
        self.title = title
        self.columns = tuple(columns)
        self.rows: list[tuple[str, ...]] = []
        self._print = printer
        # Rows print before the widest cell is known: the first column (labels) gets a hint.
        self._widths = [max(len(c), 8) for c in self.columns]
        self._widths[0] = max(self._widths[0], first_width)
        printer("")
        printer(f"  {title}")
        printer(
            "  " + " | ".join(c.ljust(w) for c, w in zip(self.columns, self._widths, strict=True))
        )
        printer("  " + "-+-".join("-" * w for w in self._widths))

    def add(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        row = tuple(c if isinstance(c, str) else fmt(c) for c in cells)
        self.rows.append(row)
        self._print("  " + " | ".join(c.ljust(w) for c, w in zip(row, self._widths, strict=True)))

    def markdown(self) -> str:
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows],
        }


@dataclass(frozen=True)
class Target:
    """A figure held against one of the issues' targets."""

    goal: str  # e.g. "first audio p95, 1 client < 100 ms"
    figure: str
    ok: bool | None  # None: not measured in this run (e.g. quick mode)

    def to_dict(self) -> dict[str, Any]:
        return {"goal": self.goal, "figure": self.figure, "verdict": verdict(self.ok)}


@dataclass
class Section:
    """One benchmark's output: tables, notes, and the raw figures for the JSON report."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def target(self, goal: str, figure: str, ok: bool | None) -> None:
        self.targets.append(Target(goal, figure, ok))

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        if self.error:
            parts += [f"**Failed:** `{self.error}`", ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        parts += [f"- {note}" for note in self.notes]
        parts += ["", f"_{self.seconds:.0f} s_", ""]
        return "\n".join(parts)


def machine_info() -> dict[str, Any]:
    """Where and with what the figures were taken."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {"python": platform.python_version()}
    for dist in (
        "duplex",
        "piper-tts",
        "onnxruntime",
        "grpcio",
        "redis",
        "websockets",
        "uvicorn",
        "starlette",
        "numpy",
        "soxr",
        "psutil",
    ):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "versions": versions,
        "python_executable": sys.executable,
    }


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def write_report(
    out_dir: Path, sections: Sequence[Section], machine: dict[str, Any], *, quick: bool
) -> tuple[Path, Path]:
    """Write <timestamp>-report.md and .json under ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md_path = out_dir / f"{stamp}-report.md"
    json_path = out_dir / f"{stamp}-report.json"
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    head = [
        f"# duplex benchmark report{' (quick mode: tiny samples, not figures)' if quick else ''}",
        "",
        f"- date: {machine['date']}",
        f"- machine: {machine['logical_cores']} logical cores ({machine['physical_cores']} "
        f"physical), {machine['cpu_model'] or 'unknown CPU'}, {machine['memory_gib']} GiB, "
        f"{machine['platform']}; load average at start {machine['load_avg_at_start']}",
        f"- code: commit {machine['git_commit']}"
        + (" (with uncommitted changes)" if machine["git_dirty"] else ""),
        f"- versions: {versions}",
        f"- {NOISE_NOTE}",
        "",
        "## Targets (figures, not assertions)",
        "",
        "| benchmark | target | figure | verdict |",
        "|---|---|---|---|",
        *(
            f"| {s.name} | {t.goal} | {t.figure} | {verdict(t.ok)} |"
            for s in sections
            for t in s.targets
        ),
        "",
    ]
    md_path.write_text(
        "\n".join(head) + "\n" + "\n".join(s.markdown() for s in sections), encoding="utf-8"
    )
    payload = {
        "quick": quick,
        "machine": machine,
        "sections": [
            {
                "name": s.name,
                "title": s.title,
                "error": s.error,
                "seconds": round(s.seconds, 1),
                "tables": [t.to_dict() for t in s.tables],
                "notes": s.notes,
                "targets": [t.to_dict() for t in s.targets],
                "data": s.data,
            }
            for s in sections
        ],
    }
    text = json.dumps(_clean(payload), indent=2, allow_nan=False, default=_json_default)
    json_path.write_text(text + "\n", encoding="utf-8")
    return md_path, json_path


def _clean(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
