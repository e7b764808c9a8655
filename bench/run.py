"""`make bench`: run the benchmarks, print their tables as they go, write a report.

    .venv/bin/python bench/run.py [--quick] [--peers] [--only NAME ...] [--out DIR]

Each benchmark starts the product's own processes (redis-server, `python -m duplex.worker`,
`python -m duplex.orchestrator`) on 127.0.0.1 and stops them. Figures are printed with
pass/miss against the issues' targets; nothing is asserted. The report goes to
bench/reports/<timestamp>/ (report.md, results.json, PNG plots).

A new section is one line in BENCHMARKS (or OPT_IN): a module with NAME, TITLE and
`async def run(ctx, section)`, and its time budget in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):
    # Run as a script (`python bench/run.py`): make `bench` importable as a package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    bargein_latency,
    openai_latency,
    orchestrator_latency,
    peers,
    routing_scale,
    soak,
    tone_capacity,
    webrtc_latency,
    worker_latency,
)
from bench.context import BenchContext, Watcher, load_texts
from bench.report import NOISE_NOTE, Section, load_average, machine_info, verdict, write_report

Runner = Callable[[BenchContext, Section], Awaitable[None]]


@dataclass(frozen=True)
class Benchmark:
    """One section of the report: its runner and its time budget (a hung process never hangs
    `make bench`)."""

    name: str
    title: str
    run: Runner
    budget_s: float
    quick_budget_s: float | None = None  # None: QUICK_BUDGET_S

    @classmethod
    def of(cls, module: ModuleType, budget_s: float) -> Benchmark:
        """A module with NAME, TITLE and run()."""
        return cls(module.NAME, module.TITLE, module.run, budget_s)


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark.of(worker_latency, 600.0),
    Benchmark.of(orchestrator_latency, 420.0),
    Benchmark.of(openai_latency, 300.0),
    Benchmark.of(routing_scale, 180.0),
    Benchmark.of(tone_capacity, 720.0),  # steps to 500 sessions, and 1, 2, 4 fixed-speed workers
    Benchmark.of(bargein_latency, 240.0),
    Benchmark.of(webrtc_latency, 300.0),
    Benchmark(
        webrtc_latency.CAPACITY_NAME,
        webrtc_latency.CAPACITY_TITLE,
        webrtc_latency.run_capacity,
        240.0,
    ),
    # 10 minutes of soak plus start-up; --quick: 30 s in the quick budget.
    Benchmark.of(soak, 780.0),
)
# Opt-in (`--peers` or `--only peers`): it installs the peers' virtualenvs on first use
# (minutes, from the package index), which the `--quick` smoke test must never do.
OPT_IN: tuple[Benchmark, ...] = (
    Benchmark(peers.NAME, peers.TITLE, peers.run, 1800.0, quick_budget_s=900.0),
)
QUICK_BUDGET_S = 90.0
DEFAULT_OUT = Path(__file__).resolve().parent / "reports"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [b.name for b in (*BENCHMARKS, *OPT_IN)]
    parser = argparse.ArgumentParser(description="duplex benchmarks (make bench)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny samples: a smoke test, not figures (~3 min)"
    )
    parser.add_argument(
        "--only", action="append", choices=names, metavar="NAME", help=f"one of {', '.join(names)}"
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also run `peers` (installs the peers in .run/bench-peers/ on first use)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace) -> tuple[list[Section], BenchContext]:
    """Every selected section in turn; returns them and the context (the commands each
    started, their config files)."""
    selected = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    selected += [b for b in OPT_IN if args.peers or (args.only and b.name in args.only)]
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="duplex-bench-") as tmp:
        ctx = BenchContext(quick=args.quick, texts=load_texts(), workdir=Path(tmp))
        with Watcher(ctx):
            for index, bench in enumerate(selected, start=1):
                section = Section(name=bench.name, title=bench.title)
                sections.append(section)
                await run_one(ctx, bench, section, index, len(selected), quick=args.quick)
    return sections, ctx


async def run_one(
    ctx: BenchContext, bench: Benchmark, section: Section, index: int, count: int, *, quick: bool
) -> None:
    ctx.say("")
    ctx.say(f"== {bench.name} ({index}/{count}): {bench.title}")
    ctx.enter(bench.name, index, count)
    budget = (bench.quick_budget_s or QUICK_BUDGET_S) if quick else bench.budget_s
    section.load_start = load_average()
    ctx.progress(f"load average {list(section.load_start)}, budget {budget:.0f} s")
    start = time.perf_counter()
    try:
        async with asyncio.timeout(budget):
            await bench.run(ctx, section)
    except Exception as exc:  # one benchmark failing must not lose the others
        if isinstance(exc, TimeoutError):
            section.error = f"stopped after its {budget:.0f} s budget (at: {ctx.state.step})"
        else:
            section.error = f"{type(exc).__name__}: {exc}"
        ctx.say(f"!! {bench.name} failed: {section.error}")
        traceback.print_exc()
    section.seconds = time.perf_counter() - start
    section.load_end = load_average()
    ctx.progress(f"done in {section.seconds:.0f} s, load average {list(section.load_end)}")


def invocation() -> list[str]:
    """The exact command line of this run (and make's, when make started it)."""
    lines = [shlex.join([sys.executable, *sys.argv])]
    if os.environ.get("MAKELEVEL"):
        lines.insert(0, "# started by make (`make bench`; QUICK=1 adds --quick)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    print(
        f"duplex bench{' --quick' if args.quick else ''}: {machine['date']}, "
        f"{machine['logical_cores']} cores, {machine['cpu_model']}, commit {machine['git_commit']}",
        flush=True,
    )
    print(NOISE_NOTE, flush=True)
    sections, ctx = asyncio.run(run_all(args))
    print("\n== targets (figures, not assertions)", flush=True)
    for section in sections:
        for target in section.targets:
            print(f"  {verdict(target.ok):4}  {target.goal}: {target.figure}", flush=True)
    folder = write_report(
        args.out,
        sections,
        machine,
        quick=args.quick,
        invocation=invocation(),
        commands=ctx.commands,
        configs=ctx.configs,
    )
    print(f"\nreport: {folder / 'report.md'}\n        {folder / 'results.json'}", flush=True)
    failed = [s.name for s in sections if s.error]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
