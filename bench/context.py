"""What every benchmark gets: the texts, quick mode, a work folder, printing, and the progress
line (section, step, elapsed) with a watcher that records the commands the run starts."""

from __future__ import annotations

import shlex
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.report import Section, Table

TEXTS_PATH = Path(__file__).resolve().parent / "texts.txt"
HEARTBEAT_S = 15.0  # a quiet step still prints what is running this often
WATCH_INTERVAL_S = 0.25  # how often child processes are looked at (their command lines)
CONFIG_MAX_CHARS = 20_000


def load_texts(path: Path = TEXTS_PATH) -> tuple[str, ...]:
    """The 20 fixed benchmark texts (one per line)."""
    return tuple(t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip())


@dataclass
class Progress:
    """Where the run is: the section (i of n), its step, and when each started."""

    started: float = field(default_factory=time.perf_counter)
    section: str = ""
    index: int = 0
    count: int = 0
    section_started: float = field(default_factory=time.perf_counter)
    step: str = ""
    last_print: float = field(default_factory=time.perf_counter)

    def enter(self, section: str, index: int, count: int) -> None:
        self.section, self.index, self.count = section, index, count
        self.section_started = time.perf_counter()
        self.step = "starting"

    def line(self, message: str) -> str:
        now = time.perf_counter()
        where = f"{self.section} {self.index}/{self.count} +{now - self.section_started:.0f}s"
        return f"  [{now - self.started:6.1f}s | {where}] {message}"


@dataclass
class BenchContext:
    """Shared by the benchmarks of one `make bench` run."""

    quick: bool
    texts: tuple[str, ...]
    workdir: Path
    started: float = field(default_factory=time.perf_counter)
    # Figures one benchmark leaves for another in the same run (e.g. the worker alone).
    shared: dict[str, Any] = field(default_factory=dict)
    state: Progress = field(default_factory=Progress)
    # Every command line this run started, per section (the watcher and the sections add).
    commands: dict[str, list[str]] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)  # config path -> its content
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.state.started = self.started

    def say(self, line: str = "") -> None:
        with self._lock:
            self.state.last_print = time.perf_counter()
        print(line, flush=True)

    def progress(self, message: str) -> None:
        """The progress line: elapsed, section i/n, time in the section, the step."""
        with self._lock:
            self.state.step = message
            self.state.last_print = time.perf_counter()
            line = self.state.line(message)
        print(line, file=sys.stdout, flush=True)

    def enter(self, section: str, index: int, count: int) -> None:
        """The run moves on to ``section`` (the ``index``-th of ``count``)."""
        with self._lock:
            self.state.enter(section, index, count)

    def heartbeat(self, quiet_s: float) -> None:
        """Print the progress line again when nothing was printed for ``quiet_s``."""
        with self._lock:
            now = time.perf_counter()
            if not self.state.section or now - self.state.last_print < quiet_s:
                return
            self.state.last_print = now
            line = self.state.line(f"{self.state.step} (still running)")
        print(line, file=sys.stdout, flush=True)

    def command(self, args: Sequence[str]) -> None:
        """Record a command line the current section runs (for the report), and the config
        file it was given (`--config PATH`: the product's temporary YAML files)."""
        # A process that rewrote its title (redis-server) shows it as one argument.
        text = args[0] if len(args) == 1 else shlex.join(str(a) for a in args)
        config = None
        if "--config" in args[:-1]:
            config = str(args[list(args).index("--config") + 1])
        with self._lock:
            seen = self.commands.setdefault(self.state.section or "run", [])
            if text not in seen:
                seen.append(text)
            if config is None or config in self.configs:
                return
        try:
            content = Path(config).read_text(encoding="utf-8")[:CONFIG_MAX_CHARS]
        except (OSError, UnicodeDecodeError):
            return
        with self._lock:
            self.configs[config] = content

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


class Watcher:
    """A thread that prints the progress line again when a step has been quiet for
    HEARTBEAT_S, and records the command line of every process this run starts (the product's
    workers and orchestrators, the peers' servers and clients)."""

    def __init__(self, ctx: BenchContext, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        self._ctx = ctx
        self._heartbeat_s = heartbeat_s
        self._me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-watch", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            self._record_children()
            self._ctx.heartbeat(self._heartbeat_s)

    def _record_children(self) -> None:
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                args = child.cmdline()
            except psutil.Error:
                continue
            while args and not args[-1]:
                args = args[:-1]  # redis-server pads its rewritten title with empty arguments
            if args and "-c" not in args[1:2]:  # not `python -c ...` probes (versions, imports)
                self._ctx.command(args)
