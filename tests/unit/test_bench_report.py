"""The bench report's writers on small fixed results: the folder's files, the peers table
first, the versions, load averages and commands, and plots that tolerate missing data."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench.context import BenchContext, Watcher
from bench.plots import write_plots
from bench.report import Section, Table, report_folder, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PEERS = ("in-process Piper (floor)", "piper.http_server", "wyoming-piper")
SYSTEMS = ("product (orchestrator, WebSocket)", *PEERS)
PLOT_FILES = ("first_audio.png", "throughput.png", "bargein.png", "routing.png", "capacity.png")


def quiet(_: str) -> None:
    """Tables print as rows arrive; these tests do not need to see them."""


def a_pass(system: str, clients: int, base_ms: float) -> dict[str, Any]:
    samples = [base_ms * clients + i for i in range(6)]
    return {
        "system": system,
        "concurrency": clients,
        "first_audio_ms": {"n": 6, "p50": samples[3], "p95": samples[-1]},
        "first_audio_samples_ms": samples,
        "audio_s": 10.0 * clients,
        "wall_s": 2.0,
        "audio_s_per_s": 5.0 * clients,
        "cpu_s": 1.2 * clients,
        "peak_rss_mb": 200.0,
    }


def peers_section() -> Section:
    section = Section(name="peers", title="Peers beside the product")
    table = Table("Every peer beside the product (same run)", ["system", "note"], quiet)
    for system in SYSTEMS:
        table.add(system, "")
    table.add("Pipecat pipeline", "did not install: pip exited 1")
    section.tables.append(table)
    section.data = {
        "systems": {
            s: [a_pass(s, c, 50.0 + 10 * i) for c in (1, 4, 8)] for i, s in enumerate(SYSTEMS)
        },
        "problems": {"Pipecat pipeline": "did not install: pip exited 1"},
        "versions": {"wyoming-piper": {"wyoming-piper": "1.6.2", "python": "3.11.2"}},
    }
    section.load_start, section.load_end = (1.0, 0.5, 0.2), (1.5, 0.7, 0.3)
    return section


def other_sections() -> list[Section]:
    barge = Section(name="bargein_latency", title="Barge-in")
    part = {"n": 3, "p50": 100.0, "p95": 104.0}
    barge.data = {
        "summary_ms": {
            "websocket": {"server_detect_ms": part, "server_cut_ms": part},
            "webrtc": {"server_detect_ms": part, "server_cut_ms": part},
        }
    }
    routing = Section(name="routing_scale", title="Routing")
    routing.data = {
        "by_fleet_size": [
            {"workers": n, "decision_us": {"ours": {"p50": n * 0.5, "p95": n * 0.6}}}
            for n in (10, 100, 1000)
        ]
    }
    capacity = Section(name="tone_capacity", title="Capacity")
    capacity.data = {
        "orchestrator": {
            "steps": [
                {"sessions": 50, "send_lateness_p99_ms": 2.0, "held": True},
                {"sessions": 100, "send_lateness_p99_ms": 30.0, "held": False},
            ]
        }
    }
    broken = Section(name="webrtc_latency", title="WebRTC", error="TimeoutError: budget")
    return [barge, routing, capacity, broken]


def machine() -> dict[str, Any]:
    return {
        "date": "2026-11-26T12:00:00+00:00",
        "platform": "Linux",
        "cpu_model": "Test CPU",
        "logical_cores": 2,
        "physical_cores": 1,
        "memory_gib": 24.0,
        "load_avg_at_start": [0.5, 0.4, 0.3],
        "git_commit": "abc1234",
        "git_dirty": False,
        "versions": {"python": "3.11.2", "duplex": "0.1.0", "onnxruntime": "1.23.0"},
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report written from the fixed results (drawing the plots takes a second or two)."""
    return write_report(
        tmp_path_factory.mktemp("reports"),
        [*other_sections(), peers_section()],
        machine(),
        quick=True,
        invocation=[".venv/bin/python bench/run.py --peers --quick"],
        commands={"peers": ["python -m wyoming_piper --voice en_US-joe-medium"]},
        configs={"/tmp/w/worker.yaml": "worker:\n  name: bench-piper\n"},
    )


def test_write_report_makes_a_folder_with_results_report_and_png_plots(written: Path) -> None:
    assert written.is_dir()
    results = json.loads((written / "results.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in results["sections"]][-1] == "peers"
    assert (written / "report.md").stat().st_size > 0
    for name in PLOT_FILES:
        assert (written / name).read_bytes()[:8] == PNG_MAGIC, name


def test_the_reports_first_table_lists_every_peer_beside_the_product(written: Path) -> None:
    md = (written / "report.md").read_text(encoding="utf-8")
    first_table = md[md.index("\n|") : md.index("\n\n", md.index("\n|"))]
    for system in SYSTEMS:
        assert f"| {system} |" in first_table, system
    assert "Pipecat pipeline" in first_table and "did not install: pip exited 1" in first_table
    assert "**Pipecat pipeline**: did not install" in md


def test_the_report_records_versions_load_average_commands_and_failures(written: Path) -> None:
    md = (written / "report.md").read_text(encoding="utf-8")
    assert "onnxruntime 1.23.0" in md and "python 3.11.2" in md
    assert "wyoming-piper (its own virtualenv): wyoming-piper 1.6.2" in md
    assert "[1.0, 0.5, 0.2] at start, [1.5, 0.7, 0.3] at end" in md
    assert ".venv/bin/python bench/run.py --peers --quick" in md
    assert "python -m wyoming_piper --voice en_US-joe-medium" in md
    assert "<code>/tmp/w/worker.yaml</code>" in md and "  name: bench-piper" in md
    assert "**Failed:** `TimeoutError: budget`" in md
    for name in PLOT_FILES:
        assert f"]({name})" in md


def test_plots_with_no_data_are_named_and_nothing_is_drawn(tmp_path: Path) -> None:
    plots, problems = write_plots(tmp_path, {"sections": []})

    assert plots == []
    assert len(problems) == len(PLOT_FILES)
    assert all("no data" in p for p in problems)
    assert list(tmp_path.iterdir()) == []


def test_capacity_plot_finds_steps_wherever_the_section_keeps_them(tmp_path: Path) -> None:
    """tone_capacity's data changes shape: any list of steps with sessions and a lateness
    figure is drawn; rows without the other keys are fine."""
    payload = {
        "sections": [
            {
                "name": "tone_capacity",
                "data": {
                    "series": [{"workers": 1, "steps": [{"sessions": 10, "lateness_p99_ms": 3}]}],
                    "unrelated": {"sessions": "x"},
                },
            }
        ]
    }

    plots, problems = write_plots(tmp_path, payload)

    assert [p.file for p in plots] == ["capacity.png"]
    assert (tmp_path / "capacity.png").read_bytes()[:8] == PNG_MAGIC
    assert len(problems) == len(PLOT_FILES) - 1


def test_report_folders_are_distinct_within_one_second(tmp_path: Path) -> None:
    first, second = report_folder(tmp_path), report_folder(tmp_path)

    assert first != second and first.is_dir() and second.is_dir()


def test_progress_line_names_section_step_and_elapsed_and_commands_are_kept_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = BenchContext(quick=True, texts=("a",), workdir=tmp_path)
    ctx.enter("peers", 8, 9)
    ctx.progress("wyoming-piper: 4 client(s)")
    ctx.command(["python", "-m", "wyoming_piper", "--data-dir", "/tmp/a b"])
    ctx.command(["python", "-m", "wyoming_piper", "--data-dir", "/tmp/a b"])
    config = tmp_path / "worker.yaml"
    config.write_text("worker: {}\n", encoding="utf-8")
    ctx.command(["python", "-m", "duplex.worker", "--config", str(config)])

    line = capsys.readouterr().out.strip()
    assert "peers 8/9 +0s]" in line and line.endswith("wyoming-piper: 4 client(s)")
    assert line.startswith("[") and "s |" in line
    assert ctx.commands == {
        "peers": [
            "python -m wyoming_piper --data-dir '/tmp/a b'",
            f"python -m duplex.worker --config {config}",
        ]
    }
    assert ctx.configs == {str(config): "worker: {}\n"}


def test_a_quiet_step_prints_its_progress_line_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = BenchContext(quick=True, texts=("a",), workdir=tmp_path)
    ctx.enter("peers", 1, 1)
    ctx.progress("Pipecat pipeline: 8 pipeline(s)")
    ctx.heartbeat(3600.0)  # not quiet long enough: nothing
    ctx.heartbeat(0.0)

    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("Pipecat pipeline: 8 pipeline(s) (still running)")


def test_the_watcher_records_the_processes_a_section_starts(tmp_path: Path) -> None:
    ctx = BenchContext(quick=True, texts=("a",), workdir=tmp_path)
    ctx.enter("routing_scale", 1, 1)
    with Watcher(ctx, heartbeat_s=3600.0):
        child = subprocess.Popen(["sleep", "1.5"])
        try:
            deadline = time.monotonic() + 5.0
            while "sleep 1.5" not in ctx.commands.get("routing_scale", []):
                assert time.monotonic() < deadline, ctx.commands
                time.sleep(0.05)
        finally:
            child.kill()
            child.wait(timeout=5)
