"""The pure parts of the `peers` benchmark: ratios, the Wyoming data-dir layout, the venv reuse
rule. Nothing here installs a peer."""

from __future__ import annotations

import math
import platform
import sys
from pathlib import Path

import pytest

from bench.context import BenchContext
from bench.passes import PassResult
from bench.peers_report import FLOOR, HTTP_SERVER, PIPECAT, PRODUCT, WYOMING, report
from bench.peers_setup import (
    MARKER,
    Figures,
    PeerSpec,
    cpu_per_audio,
    ensure_venv,
    pair_ratios,
    venv_versions,
    wyoming_data_dir,
)
from bench.report import Section


def test_pair_ratios_divide_ours_by_theirs_figure_by_figure() -> None:
    ours = Figures(p50_s=0.1, p95_s=0.2, throughput=30.0, cpu_per_audio=0.12, peak_rss=400.0)
    theirs = Figures(p50_s=0.2, p95_s=0.8, throughput=40.0, cpu_per_audio=0.1, peak_rss=800.0)

    ratios = pair_ratios(ours, theirs)

    assert ratios == pytest.approx(
        {"p50": 0.5, "p95": 0.25, "aud-s/s": 0.75, "CPU/aud-s": 1.2, "RSS": 0.5}
    )


def test_pair_ratios_are_nan_where_a_figure_is_missing() -> None:
    ours = Figures(p50_s=0.1, p95_s=math.nan, throughput=30.0, cpu_per_audio=0.1, peak_rss=1.0)
    theirs = Figures(p50_s=0.0, p95_s=0.5, throughput=30.0, cpu_per_audio=0.1, peak_rss=1.0)

    ratios = pair_ratios(ours, theirs)

    assert math.isnan(ratios["p50"])
    assert math.isnan(ratios["p95"])
    assert ratios["aud-s/s"] == pytest.approx(1.0)


def test_cpu_per_audio_is_nan_without_audio_or_cpu() -> None:
    assert cpu_per_audio(1.5, 10.0) == pytest.approx(0.15)
    assert math.isnan(cpu_per_audio(1.0, 0.0))
    assert math.isnan(cpu_per_audio(None, 5.0))


def test_wyoming_data_dir_holds_the_voice_under_the_names_wyoming_piper_looks_for(
    tmp_path: Path,
) -> None:
    model = tmp_path / "src" / "some-model.onnx"
    config = tmp_path / "src" / "some-model.onnx.json"
    model.parent.mkdir()
    model.write_bytes(b"onnx")
    config.write_text("{}")

    data_dir = wyoming_data_dir(tmp_path / "data", model, config, voice="en_US-joe-medium")
    # A second layout over the first replaces the links instead of failing.
    wyoming_data_dir(tmp_path / "data", model, config, voice="en_US-joe-medium")

    assert sorted(p.name for p in data_dir.iterdir()) == [
        "en_US-joe-medium.onnx",
        "en_US-joe-medium.onnx.json",
    ]
    assert (data_dir / "en_US-joe-medium.onnx").read_bytes() == b"onnx"
    assert (data_dir / "en_US-joe-medium.onnx.json").read_text() == "{}"


def test_ensure_venv_reuses_a_venv_whose_marker_names_the_same_requirement(
    tmp_path: Path,
) -> None:
    spec = PeerSpec("fake-peer", "fake-peer[extra]", "fake_peer")
    python = tmp_path / "fake-peer" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    (tmp_path / "fake-peer" / MARKER).write_text("fake-peer[extra]\n")
    said: list[str] = []

    found = ensure_venv(spec, said.append, root=tmp_path)

    assert found == python
    assert said == []  # nothing installed, nothing announced


def fake_pass(system: str, clients: int, p50_s: float) -> PassResult:
    return PassResult(
        system=system,
        concurrency=clients,
        first_audio_s=[p50_s * clients] * 3,
        audio_s=10.0,
        wall_s=2.0,
        cpu_s=1.0,
        peak_rss=300 * 2**20,
    )


def test_peers_table_lists_every_system_the_ratio_to_the_product_and_who_did_not_install(
    tmp_path: Path,
) -> None:
    ctx = BenchContext(quick=True, texts=("a", "b", "c"), workdir=tmp_path)
    section = Section(name="peers", title="Peers")
    clients = (1, 4, 8)
    systems = {
        PRODUCT: {c: fake_pass(PRODUCT, c, 0.05) for c in clients},
        FLOOR: {c: fake_pass(FLOOR, c, 0.1) for c in clients},
        WYOMING: {c: fake_pass(WYOMING, c, 0.2) for c in (1, 4)},  # no 8-client pass
    }

    problems = {
        PIPECAT: "did not install: no wheel",
        HTTP_SERVER: "failed: port not open",
        WYOMING: "failed at 8 client(s): TimeoutError",
    }
    report(ctx, section, dict(reversed(systems.items())), problems, {}, clients)

    table = section.tables[0]
    assert table.columns[1:4] == (
        "sequential p50/p95 ms",
        "4 clients p50/p95 ms",
        "8 clients p50/p95 ms",
    )
    rows = {row[0]: row for row in table.rows}
    # The product first, then the floor and each peer in a fixed order, measured or not.
    assert list(rows) == [PRODUCT, FLOOR, HTTP_SERVER, WYOMING, PIPECAT]
    assert rows[HTTP_SERVER][-1] == "failed: port not open"
    assert rows[FLOOR][1] == "100/100" and rows[FLOOR][-2] == "0.50/0.50/0.50"
    assert rows[WYOMING][3] == "-" and rows[WYOMING][-2] == "0.25/0.25/-"
    assert rows[PIPECAT][-1] == "did not install: no wheel"
    assert rows[WYOMING][-1] == "failed at 8 client(s): TimeoutError"  # one row, measured
    assert section.data["problems"] == problems
    goals = [t.goal for t in section.targets]
    assert "first audio p50 below every peer's, sequential" in goals
    assert all(t.ok for t in section.targets if "p50" in t.goal)


def test_venv_versions_reads_python_and_packages_from_that_interpreter() -> None:
    found = venv_versions(Path(sys.executable), ["pytest", "no-such-package-here"])

    assert found["python"] == platform.python_version()
    assert found["pytest"] == pytest.__version__
    assert found["no-such-package-here"] == "not installed"
