"""compose/alerts.yml, the alert rules every generated Prometheus loads: valid for promtool,
reading only series the duplex processes export, and firing exactly when they should
(`promtool test rules` with series for a worker gone, all workers gone, the orchestrator gone,
slow first audio and a nearly full GPU, beside series that must not fire)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_grafana_dashboard import exported_series, grouping_labels, selectors

ALERTS = Path(__file__).resolve().parents[2] / "compose" / "alerts.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install --no-install-recommends prometheus)",
)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_checklists_alerts_are_all_there() -> None:
    """A worker gone, no worker at all, the orchestrator gone, first-audio p95 too high, GPU
    memory near full; each with a severity and a summary."""
    by_name = {r["alert"]: r for r in rules()}
    assert set(by_name) == {
        "DuplexWorkerDown",
        "DuplexNoWorkerUp",
        "DuplexOrchestratorDown",
        "DuplexFirstAudioSlow",
        "DuplexGpuMemoryNearFull",
    }
    for rule in by_name.values():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["for"]


def test_every_series_and_label_an_alert_reads_is_exported() -> None:
    """Each metric is one a duplex process exports (or Prometheus's `up`), and every label an
    alert matches, groups by or prints is on that series."""
    exported = exported_series()
    for rule in rules():
        expr = " ".join(rule["expr"].split())
        printed = set(re.findall(r"\$labels\.(\w+)", yaml.safe_dump(rule["annotations"])))
        for selector in selectors(expr):
            if selector.name == "up":
                assert selector.matched <= {"job"}
                continue
            assert selector.name in exported, f"{rule['alert']}: {selector.name} is not exported"
            labels = exported[selector.name]
            assert selector.matched | (grouping_labels(expr) - {"le"}) <= labels, rule["alert"]
            assert printed - {"instance", "job"} <= labels, (rule["alert"], printed)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules compose/alerts.yml` (templates included)."""
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def _s(series: str, values: str) -> dict[str, str]:
    """One input series: its selector and its values, one a minute."""
    return {"series": series, "values": values}


def _bucket(le: str, per_minute: int) -> dict[str, str]:
    return {
        "series": f'duplex_orch_first_audio_seconds_bucket{{job="duplex-orchestrator",le="{le}"}}',
        "values": f"0+{per_minute}x20",
    }


USED = 'worker_gpu_memory_used_bytes{{gpu_id="{0}",worker="tts-piper@{0}"}}'
TOTAL = 'worker_gpu_memory_total_bytes{{gpu_id="{0}",worker="tts-piper@{0}"}}'
WORKER = 'up{{job="duplex-workers",instance="tts-piper-{0}:910{1}"}}'
ORCH = 'up{job="duplex-orchestrator",instance="orchestrator:8080"}'

# Series for `promtool test rules`, one minute apart, and the alerts they must (and must not)
# raise. Annotations are left out of the copy of the rules these run against: promtool would
# compare their rendered text, which test_promtool_accepts_the_rules already checks.
SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "one worker stops answering at minute 3",
        "interval": "1m",
        "input_series": [
            _s(WORKER.format(0, 1), "1 1 1 0x10"),
            _s(WORKER.format(1, 2), "1x13"),
            _s(ORCH, "1x13"),
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "DuplexWorkerDown", "exp_alerts": []},  # pending
            {
                "eval_time": "5m",
                "alertname": "DuplexWorkerDown",
                "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "duplex-workers",
                                               "instance": "tts-piper-0:9101"}}],
            },
            {"eval_time": "5m", "alertname": "DuplexNoWorkerUp", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "DuplexOrchestratorDown", "exp_alerts": []},
        ],
    },
    {
        "name": "every worker and the orchestrator gone",
        "interval": "1m",
        "input_series": [
            _s(WORKER.format(0, 1), "0x10"),
            _s(ORCH, "0x10"),
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "DuplexNoWorkerUp",
             "exp_alerts": [{"exp_labels": {"severity": "critical"}}]},
            {"eval_time": "3m", "alertname": "DuplexOrchestratorDown",
             "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "duplex-orchestrator",
                                            "instance": "orchestrator:8080"}}]},
        ],
    },
    {
        "name": "first audio in 0.5-1 s for ten minutes: p95 above 400 ms",
        "interval": "1m",
        "input_series": [_bucket("0.1", 0), _bucket("0.25", 0), _bucket("0.5", 1),
                         _bucket("1", 60), _bucket("+Inf", 60)],
        "alert_rule_test": [
            {"eval_time": "12m", "alertname": "DuplexFirstAudioSlow",
             "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
        ],
    },
    {
        "name": "first audio under 100 ms: no alert",
        "interval": "1m",
        "input_series": [_bucket("0.1", 60), _bucket("0.25", 60), _bucket("0.5", 60),
                         _bucket("1", 60), _bucket("+Inf", 60)],
        "alert_rule_test": [
            {"eval_time": "12m", "alertname": "DuplexFirstAudioSlow", "exp_alerts": []}
        ],
    },
    {
        "name": "GPU 1 at 96% memory, GPU 0 at half",
        "interval": "1m",
        "input_series": [
            _s(USED.format(0), "12e9x10"),
            _s(TOTAL.format(0), "24e9x10"),
            _s(USED.format(1), "23e9x10"),
            _s(TOTAL.format(1), "24e9x10"),
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "DuplexGpuMemoryNearFull", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "DuplexGpuMemoryNearFull",
             "exp_alerts": [{"exp_labels": {"severity": "warning", "gpu_id": "1",
                                            "worker": "tts-piper@1"}}]},
        ],
    },
]  # fmt: skip


def _rules_without_annotations(path: Path) -> Path:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@needs_promtool
def test_each_alert_fires_when_it_should_and_not_otherwise(tmp_path: Path) -> None:
    """`promtool test rules`: every scenario's expected alerts, exactly."""
    rules_file = _rules_without_annotations(tmp_path / "alerts.yml")
    tests = [{k: v for k, v in s.items() if k != "name"} for s in SCENARIOS]
    spec = {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = _promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_the_rule_tests_are_real(tmp_path: Path) -> None:
    """A scenario that expects an alert from healthy series fails."""
    rules_file = _rules_without_annotations(tmp_path / "alerts.yml")
    wrong = {
        "interval": "1m",
        "input_series": [_s('up{job="duplex-workers",instance="w:1"}', "1x10")],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "DuplexWorkerDown",
             "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "duplex-workers",
                                            "instance": "w:1"}}]},
        ],
    }  # fmt: skip
    spec = {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": [wrong]}
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert _promtool("test", "rules", str(test_file)).returncode != 0
