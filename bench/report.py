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
    # 1/5/15-minute load averages as the section started and ended (how busy the machine was).
    load_start: tuple[float, ...] = ()
    load_end: tuple[float, ...] = ()

    def target(self, goal: str, figure: str, ok: bool | None) -> None:
        self.targets.append(Target(goal, figure, ok))

    def markdown(self, *, skip_tables: int = 0) -> str:
        """The section's Markdown; ``skip_tables`` leaves out its first tables (shown above)."""
        parts = [f"## {self.title}", ""]
        if self.error:
            parts += [f"**Failed:** `{self.error}`", ""]
        if skip_tables:
            parts += ["_Its main table is the report's first table._", ""]
        for table in self.tables[skip_tables:]:
            parts += [table.markdown(), ""]
        parts += [f"- {note}" for note in self.notes]
        parts += [
            "",
            f"_`{self.name}`: {self.seconds:.0f} s; load average (1/5/15 min) "
            f"{list(self.load_start)} at start, {list(self.load_end)} at end_",
            "",
        ]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "error": self.error,
            "seconds": round(self.seconds, 1),
            "load_avg_start": list(self.load_start),
            "load_avg_end": list(self.load_end),
            "tables": [t.to_dict() for t in self.tables],
            "notes": self.notes,
            "targets": [t.to_dict() for t in self.targets],
            "data": self.data,
        }


def load_average() -> tuple[float, ...]:
    """1/5/15-minute load averages, rounded."""
    return tuple(round(x, 2) for x in os.getloadavg())


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


PEERS_SECTION = "peers"  # its first table opens the report


@dataclass(frozen=True)
class Plot:
    """A PNG written beside the report."""

    title: str
    file: str


def report_folder(out_dir: Path) -> Path:
    """A new bench/reports/<timestamp>/ (a suffix when two runs start in the same second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        folder = out_dir / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free report folder for {stamp} under {out_dir}")


def write_report(
    out_dir: Path,
    sections: Sequence[Section],
    machine: dict[str, Any],
    *,
    quick: bool,
    invocation: Sequence[str] = (),
    commands: dict[str, list[str]] | None = None,
    configs: dict[str, str] | None = None,
) -> Path:
    """Write results.json, the plots and report.md into a new folder under ``out_dir``;
    returns that folder. A plot that cannot be drawn is named in the report, never fatal."""
    folder = report_folder(out_dir)
    payload = {
        "quick": quick,
        "machine": machine | {"load_avg_at_end": list(load_average())},
        "invocation": list(invocation),
        "commands": commands or {},
        "configs": configs or {},
        "sections": [s.to_dict() for s in sections],
    }
    payload = _clean(payload)
    text = json.dumps(payload, indent=2, allow_nan=False, default=_json_default)
    (folder / "results.json").write_text(text + "\n", encoding="utf-8")
    plots, problems = _plots(folder, payload)
    md = render_markdown(sections, payload, plots, problems)
    (folder / "report.md").write_text(md, encoding="utf-8")
    return folder


def _plots(folder: Path, payload: dict[str, Any]) -> tuple[list[Plot], list[str]]:
    try:
        from bench.plots import write_plots
    except ImportError as exc:  # a virtualenv made before matplotlib joined the dev extra
        return [], [f"no plots: {exc} (make venv installs matplotlib)"]
    return write_plots(folder, payload)


def render_markdown(
    sections: Sequence[Section],
    payload: dict[str, Any],
    plots: Sequence[Plot],
    problems: Sequence[str],
) -> str:
    """report.md: the peers table first, then the machine, versions, targets, plots, every
    section, and the commands."""
    machine = payload["machine"]
    quick = payload["quick"]
    lines = [
        f"# duplex benchmark report{' (quick mode: tiny samples, not figures)' if quick else ''}",
        "",
        f"{machine['date']}, {machine['logical_cores']} logical cores, commit "
        f"{machine['git_commit']}{' (with uncommitted changes)' if machine['git_dirty'] else ''}."
        f" {NOISE_NOTE}",
        "",
        "## Every peer beside the product",
        "",
        *_peers_head(sections),
        "## Machine and versions",
        "",
        f"- machine: {machine['logical_cores']} logical cores ({machine['physical_cores']} "
        f"physical), {machine['cpu_model'] or 'unknown CPU'}, {machine['memory_gib']} GiB, "
        f"{machine['platform']}",
        f"- load average (1/5/15 min): {machine['load_avg_at_start']} at start, "
        f"{machine['load_avg_at_end']} at end; per section below",
        "- product (.venv): " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
        *_peer_versions(sections),
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
        "## Plots",
        "",
        *(f"![{p.title}]({p.file})\n\n_{p.title}_\n" for p in plots),
        *(f"- {problem}" for problem in problems),
        "",
    ]
    for s in sections:
        lines.append(s.markdown(skip_tables=1 if s.name == PEERS_SECTION and s.tables else 0))
    lines += ["## Commands", "", "The run, as started:", "", "```"]
    lines += [*payload["invocation"], "```", ""] if payload["invocation"] else ["```", ""]
    for name, commands in payload["commands"].items():
        lines += [f"`{name}` started:", "", "```", *commands, "```", ""]
    for path, content in payload.get("configs", {}).items():
        lines += [f"<details><summary><code>{path}</code></summary>", "", "```yaml"]
        lines += [content.rstrip("\n"), "```", "", "</details>", ""]
    return "\n".join(lines)


def _peers_head(sections: Sequence[Section]) -> list[str]:
    peers = [s for s in sections if s.name == PEERS_SECTION]
    if not peers:
        return [
            "_The peers were not run (`make bench` runs them; `bench/run.py --peers`)._",
            "",
        ]
    section = peers[0]
    out: list[str] = []
    if section.error:
        out += [f"**The peers section failed:** `{section.error}`", ""]
    if section.tables:
        out += [section.tables[0].markdown(), ""]
    problems = section.data.get("problems") or {}
    out += [f"- **{name}**: {reason}" for name, reason in problems.items()]
    return [*out, ""] if problems else out


def _peer_versions(sections: Sequence[Section]) -> list[str]:
    out = []
    for s in sections:
        if s.name != PEERS_SECTION:
            continue
        for peer, versions in (s.data.get("versions") or {}).items():
            if isinstance(versions, dict):
                listed = ", ".join(f"{k} {v}" for k, v in versions.items())
            else:
                listed = str(versions)
            out.append(f"- {peer} (its own virtualenv): {listed}")
    return out


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
