"""`make bench` in its tiny --quick mode, so that the benchmarks cannot rot: every benchmark
runs against the real processes (redis-server, worker, orchestrator) and reports figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]
NAMES = (
    "worker_latency",
    "orchestrator_latency",
    "routing_scale",
    "tone_capacity",
    "bargein_latency",
    "webrtc_latency",
    "webrtc_capacity",
)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every benchmark once with --quick and return the JSON report (+ the Markdown)."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    reports = sorted(out.glob("*/results.json"))
    assert reports, (
        f"no report written (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    report: dict[str, Any] = json.loads(reports[-1].read_text(encoding="utf-8"))
    report["_folder"] = reports[-1].parent
    report["_markdown"] = (reports[-1].parent / "report.md").read_text(encoding="utf-8")
    report["_rc"] = proc.returncode
    report["_output"] = proc.stdout[-3000:] + proc.stderr[-3000:]
    return report


def section(report: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in report["sections"] if s["name"] == name]
    assert found, f"no section {name}"
    result: dict[str, Any] = found[0]
    assert result["error"] is None, f"{name} failed: {result['error']}\n{report['_output']}"
    assert result["tables"] and all(t["rows"] for t in result["tables"]), f"{name}: empty table"
    return result


def test_quick_run_succeeds_and_reports_every_benchmark(quick_report: dict[str, Any]) -> None:
    """Every benchmark runs, the command exits 0, and the report names machine and versions."""
    assert quick_report["_rc"] == 0, quick_report["_output"]
    names = [s["name"] for s in quick_report["sections"]]
    # Every registered section ran (others add theirs to run.py), these among them.
    assert names == [b.name for b in BENCHMARKS]
    assert set(NAMES) <= set(names)
    machine = quick_report["machine"]
    assert machine["logical_cores"] >= 1
    assert machine["versions"]["piper-tts"] != "not installed"
    md = quick_report["_markdown"]
    assert "cores" in md and "noise" in md
    assert "The peers were not run" in md  # --quick without --peers
    for section in quick_report["sections"]:
        assert len(section["load_avg_start"]) == 3 and len(section["load_avg_end"]) == 3
    # The product's processes were seen and recorded as commands.
    commands = "\n".join(c for cs in quick_report["commands"].values() for c in cs)
    assert "duplex.worker" in commands and "duplex.orchestrator" in commands


def test_quick_run_draws_the_plots_its_sections_have_data_for(
    quick_report: dict[str, Any],
) -> None:
    folder: Path = quick_report["_folder"]
    for name in ("first_audio", "throughput", "bargein", "routing", "capacity"):
        png = folder / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name}.png)" in quick_report["_markdown"]


def test_worker_latency_measures_first_audio_throughput_and_underruns(
    quick_report: dict[str, Any],
) -> None:
    """Every text got first audio over gRPC and in-process; under-runs were read from Redis."""
    data = section(quick_report, "worker_latency")["data"]
    for key in ("worker_default_lead", "worker_lead0", "in_process"):
        first = data[key][0]
        assert first["first_audio_ms"]["n"] == 3, key
        assert first["first_audio_ms"]["p50"] > 0, key
        assert first["audio_s"] > 0, key
    assert data["worker_default_lead"][0]["missing_first_audio"] == 0
    assert isinstance(data["worker_default_lead"][0]["underruns"], int)
    assert data["worker_lead0"][0]["peak_rss_mb"] > 0


def test_orchestrator_latency_gets_audio_through_the_whole_path(
    quick_report: dict[str, Any],
) -> None:
    """Texts spoken through the orchestrator's WebSocket reach the client from the worker."""
    data = section(quick_report, "orchestrator_latency")["data"]
    through = data["orchestrator"][0]
    assert through["first_audio_ms"]["n"] == 3
    assert through["missing_first_audio"] == 0
    assert through["workers"] == ["bench-piper-orch"]
    assert data["worker_alone"][0]["first_audio_ms"]["n"] == 3


def test_routing_scale_paths_agree_on_the_least_loaded_resident_worker(
    quick_report: dict[str, Any],
) -> None:
    """With 1,000 workers, our path and the guide's choose a worker of the same, lowest load."""
    data = section(quick_report, "routing_scale")["data"]
    assert data["workers"] == 1000
    assert data["decision_us"]["ours_view_choose_worker"]["n"] > 0
    assert data["decision_us"]["guide_keys_hgetall"]["n"] > 0
    chosen = set(data["chosen_queue_depth"].values())
    assert chosen == {data["best_queue_depth"]}


def test_tone_capacity_streams_frames_from_worker_and_orchestrator(
    quick_report: dict[str, Any],
) -> None:
    """The tone worker's streams and the orchestrator's sessions deliver frames, none failing."""
    data = section(quick_report, "tone_capacity")["data"]
    streams = data["worker_streams"]
    assert streams["failed"] == 0
    assert streams["frames_per_s"] > 0
    step = data["orchestrator"]["steps"][0]
    assert step["failed"] == 0, step["errors"]
    assert step["received_share"] > 0
    assert step["share_within_10ms"] is not None  # the orchestrator's lateness metric was read


def test_bargein_latency_measures_every_part_on_both_transports(
    quick_report: dict[str, Any],
) -> None:
    """Piper speech over the tone voice barges in on the WebSocket and over WebRTC: every run
    measured and each part a positive figure."""
    data = section(quick_report, "bargein_latency")["data"]
    assert data["failures"] == {"websocket": [], "webrtc": []}
    for transport in ("websocket", "webrtc"):
        parts = data["summary_ms"][transport]
        for key in (
            "server_detect_ms",
            "client_detect_ms",
            "server_cut_ms",
            "reported_latency_ms",
            "client_last_audio_ms",
        ):
            assert parts[key]["n"] == data["repeats"], (transport, key)
            assert parts[key]["p50"] > 0, (transport, key)
    rows = [r[0] for r in section(quick_report, "bargein_latency")["tables"][0]["rows"]]
    assert any(r.startswith("(a)") for r in rows) and any(r.startswith("(c)") for r in rows)


def test_webrtc_latency_gets_first_audio_over_both_transports(
    quick_report: dict[str, Any],
) -> None:
    """Piper's first audio reaches a WebSocket client and an aiortc client for every text."""
    found = section(quick_report, "webrtc_latency")
    data = found["data"]
    assert {(p["transport"], p["clients"]) for p in data["passes"]} == {
        ("websocket", 1),
        ("webrtc", 1),
    }
    for p in data["passes"]:
        for key in ("first_frame_ms", "first_sound_ms", "first_voiced_ms"):
            assert p[key]["n"] == data["texts"], (p["transport"], key)
            assert p[key]["p50"] > 0, (p["transport"], key)
        assert p["workers"] == ["bench-piper-rtc"]
    rows = [r[0] for r in found["tables"][0]["rows"]]
    assert "WebRTC: first voiced frame" in rows and "WebSocket: first frame" in rows


def test_webrtc_capacity_holds_sessions_with_and_without_a_mic(
    quick_report: dict[str, Any],
) -> None:
    """Both series run a step of WebRTC sessions: voiced frames arrive, none fails, and the
    orchestrator's lateness histogram and CPU were read."""
    data = section(quick_report, "webrtc_capacity")["data"]
    assert [r["mic"] for r in data["steps"]] == [True, False]
    for step in data["steps"]:
        assert step["failed"] == 0, step["errors"]
        assert step["received_share"] > 0
        assert step["share_within_10ms"] is not None
        assert step["send_lateness_p99_ms"] > 0
        assert step["orchestrator_cpu_percent"] > 0
