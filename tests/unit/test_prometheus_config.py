"""compose/prometheus.yml scrapes every duplex process where compose runs it, and Prometheus's
own checker accepts it and every dashboard query.

The YAML-level tests always run. The `promtool` ones need Debian's `prometheus` package
(`apt-get install --no-install-recommends prometheus`, 2.42: it ships promtool) and skip,
saying so, where it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_grafana_dashboard import all_queries

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "compose" / "prometheus.yml"
COMPOSE = ROOT / "compose" / "docker-compose.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install --no-install-recommends prometheus)",
)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _jobs() -> dict[str, list[str]]:
    """job_name -> its static targets."""
    jobs: dict[str, list[str]] = {}
    for job in _load(PROMETHEUS_YML)["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        jobs[job["job_name"]] = targets
    return jobs


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _load(COMPOSE)["services"]
    return services


def _command_config(service: dict[str, Any]) -> dict[str, Any]:
    """The YAML config file a compose service's `--config` names (relative to the repo)."""
    command = service["command"]
    path = command[command.index("--config") + 1]
    config: dict[str, Any] = _load(ROOT / path)
    return config


def _worker_services() -> dict[str, Any]:
    return {
        name: svc
        for name, svc in _services().items()
        if "duplex.worker" in " ".join(svc.get("command", []))
    }


def test_the_scrape_config_has_one_job_per_kind_of_process() -> None:
    """Jobs for the orchestrator, the console and the workers; targets are host:port."""
    jobs = _jobs()
    assert set(jobs) == {"duplex-orchestrator", "duplex-console", "duplex-workers"}
    for targets in jobs.values():
        assert targets and all(re.fullmatch(r"[a-z0-9-]+:\d+", t) for t in targets), targets
    config = _load(PROMETHEUS_YML)["global"]
    interval, timeout = (
        int(config[k].removesuffix("s")) for k in ("scrape_interval", "scrape_timeout")
    )
    assert timeout < interval


def test_the_orchestrator_is_scraped_on_the_port_compose_gives_it() -> None:
    """orchestrator:8080, the port its compose environment sets."""
    orchestrator = _services()["orchestrator"]
    port = orchestrator["environment"]["DUPLEX_ORCH_PORT"]
    assert _jobs()["duplex-orchestrator"] == [f"orchestrator:{port}"]


def test_every_compose_worker_is_scraped_on_its_metrics_port() -> None:
    """One target per worker service of docker-compose.yml, on the metrics_port its config file
    (or its environment) gives it, a fixed port (0 or -1 could not be scraped statically)."""
    expected = []
    for name, service in _worker_services().items():
        env = service.get("environment", {})
        port = int(
            env.get(
                "DUPLEX_WORKER_METRICS_PORT", _command_config(service)["worker"]["metrics_port"]
            )
        )
        assert port > 0, f"{name}: metrics_port {port} cannot be a static scrape target"
        expected.append(f"{name}:{port}")
    assert expected, "docker-compose.yml runs no worker"
    assert sorted(_jobs()["duplex-workers"]) == sorted(expected)


def test_compose_workers_serve_metrics_beyond_their_container() -> None:
    """Inside a container /metrics must bind every interface, or Prometheus cannot reach it."""
    for name, service in _worker_services().items():
        env = service.get("environment", {})
        host = env.get(
            "DUPLEX_WORKER_METRICS_HOST", _command_config(service)["worker"]["metrics_host"]
        )
        assert host == "0.0.0.0", f"{name}: /metrics binds {host} (set DUPLEX_WORKER_METRICS_HOST)"


def test_the_console_is_scraped_on_port_8000_of_its_compose_service() -> None:
    """console:8000, and compose runs a `console` service for it."""
    assert _jobs()["duplex-console"] == ["console:8000"]
    assert "console" in _services(), "docker-compose.yml has no console service to scrape"


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@needs_promtool
def test_promtool_accepts_the_scrape_config() -> None:
    """`promtool check config compose/prometheus.yml` succeeds."""
    result = _promtool("check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_rejects_a_broken_scrape_config(tmp_path: Path) -> None:
    """The check is real: a scrape timeout longer than the interval is refused."""
    bad = tmp_path / "prometheus.yml"
    bad.write_text(
        "scrape_configs:\n  - job_name: x\n    scrape_interval: 5s\n    scrape_timeout: 10s\n"
        "    static_configs: [{targets: ['a:1']}]\n"
    )
    assert _promtool("check", "config", str(bad)).returncode != 0


def _rules_file(path: Path, exprs: list[str]) -> Path:
    """Every expression as a recording rule, Grafana's variables given plain values."""

    def plain(expr: str) -> str:
        expr = re.sub(r"\$__\w+", "1m", expr)  # $__rate_interval, $__interval, $__range
        return re.sub(r"\$\{?\w+\}?", ".*", expr)  # $worker in a regex matcher

    rules = [{"record": f"dashboard:query_{i}", "expr": plain(e)} for i, e in enumerate(exprs)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    return path


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel and variable query is valid PromQL for Prometheus 2.42 (`check rules`)."""
    exprs = [q.expr for q in all_queries()]
    assert exprs
    result = _promtool("check", "rules", str(_rules_file(tmp_path / "rules.yml", exprs)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@needs_promtool
def test_promtool_rejects_a_malformed_query(tmp_path: Path) -> None:
    """The parse check is real: an unbalanced expression is refused."""
    bad = _rules_file(tmp_path / "rules.yml", ["sum by (le (rate(x_bucket[$__rate_interval]))"])
    assert _promtool("check", "rules", str(bad)).returncode != 0
