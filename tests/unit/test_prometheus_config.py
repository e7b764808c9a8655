"""The Prometheus config `make up` generates scrapes every duplex process where compose runs
it, and Prometheus's own checker accepts it, its alert rules and every dashboard query.

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
from duplex.deploy.plan import StackPlan
from duplex.deploy.render import render, write

from tests.unit.test_deploy_compose import (
    config_path,
    service_env,
    stack,
    worker_services,
)
from tests.unit.test_grafana_dashboard import all_queries

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = "prometheus/prometheus.yml"
DATASOURCE = "grafana/datasources/prometheus.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install --no-install-recommends prometheus)",
)


def _doc(plan: StackPlan, path: str) -> Any:
    return yaml.safe_load(render(plan)[path])


def _jobs(plan: StackPlan) -> dict[str, list[str]]:
    """job_name -> its static targets."""
    jobs: dict[str, list[str]] = {}
    for job in _doc(plan, PROMETHEUS_YML)["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        jobs[job["job_name"]] = targets
    return jobs


def _services(plan: StackPlan) -> dict[str, Any]:
    services: dict[str, Any] = _doc(plan, "docker-compose.yml")["services"]
    return services


def _command_config(plan: StackPlan, service: dict[str, Any]) -> dict[str, Any]:
    """The generated YAML config file a compose service's `--config` names."""
    config: dict[str, Any] = _doc(plan, config_path(service))
    return config


BRIDGE = "two-gpus"


def test_the_scrape_config_has_one_job_per_kind_of_process() -> None:
    """Jobs for the orchestrator, the console and the workers; targets are host:port."""
    plan = stack(BRIDGE)
    jobs = _jobs(plan)
    assert set(jobs) == {"duplex-orchestrator", "duplex-console", "duplex-workers"}
    for targets in jobs.values():
        assert targets and all(re.fullmatch(r"[a-z0-9-]+:\d+", t) for t in targets), targets
    config = _doc(plan, PROMETHEUS_YML)["global"]
    interval, timeout = (
        int(config[k].removesuffix("s")) for k in ("scrape_interval", "scrape_timeout")
    )
    assert timeout < interval


def test_the_orchestrator_is_scraped_on_the_port_compose_gives_it() -> None:
    """orchestrator:8080, the port of its config file; on the host network, Prometheus
    reaches it through the gateway address compose maps the name to."""
    plan = stack(BRIDGE)
    orchestrator = _services(plan)["orchestrator"]
    port = _command_config(plan, orchestrator)["transport"]["websocket"]["port"]
    assert _jobs(plan)["duplex-orchestrator"] == [f"orchestrator:{port}"]
    assert orchestrator["network_mode"] == "host"
    assert _services(plan)["prometheus"]["extra_hosts"] == [f"orchestrator:{plan.gateway}"]


@pytest.mark.parametrize("name", ["two-gpus", "gpus-0-and-2", "per-gpu-models", "cpu-only"])
def test_every_compose_worker_is_scraped_on_its_metrics_port(name: str) -> None:
    """One target per worker service, on the metrics_port its config file (or its
    environment) gives it, a fixed port (0 or -1 could not be scraped statically)."""
    plan = stack(name)
    expected = []
    for service_name, service in worker_services(_doc(plan, "docker-compose.yml")).items():
        env = service_env(service)
        port = int(
            env.get(
                "DUPLEX_WORKER_METRICS_PORT",
                _command_config(plan, service)["worker"]["metrics_port"],
            )
        )
        assert port > 0, f"{service_name}: metrics_port {port} cannot be a static scrape target"
        expected.append(f"{service_name}:{port}")
    assert expected, "the stack runs no worker"
    assert sorted(_jobs(plan)["duplex-workers"]) == sorted(expected)


def test_compose_workers_serve_metrics_beyond_their_container() -> None:
    """Inside a container /metrics must bind every interface, or Prometheus cannot reach it."""
    plan = stack(BRIDGE)
    for name, service in worker_services(_doc(plan, "docker-compose.yml")).items():
        env = service_env(service)
        host = env.get(
            "DUPLEX_WORKER_METRICS_HOST", _command_config(plan, service)["worker"]["metrics_host"]
        )
        assert host == "0.0.0.0", f"{name}: /metrics binds {host} (set DUPLEX_WORKER_METRICS_HOST)"


def test_the_console_is_scraped_on_port_8000_of_its_compose_service() -> None:
    """console:8000, and compose runs a `console` service for it."""
    plan = stack(BRIDGE)
    assert _jobs(plan)["duplex-console"] == ["console:8000"]
    assert "console" in _services(plan), "the stack has no console service to scrape"


def test_the_host_network_variant_scrapes_loopback_addresses() -> None:
    """NETWORK=host: every target on 127.0.0.1, on the ports the stack was given."""
    plan = stack("host-gpus")
    jobs = _jobs(plan)
    assert jobs["duplex-workers"] == ["127.0.0.1:19101", "127.0.0.1:19102"]
    assert jobs["duplex-orchestrator"] == ["127.0.0.1:8080"]
    assert jobs["duplex-console"] == ["127.0.0.1:8000"]


@pytest.mark.parametrize(("name", "url"), [(BRIDGE, "http://prometheus:9090"),
                                           ("host-gpus", "http://127.0.0.1:9090")])  # fmt: skip
def test_grafanas_data_source_is_this_stacks_prometheus(name: str, url: str) -> None:
    """The generated data source is grafana/provisioning's (same uid, which every dashboard
    names) with the URL where this stack runs Prometheus."""
    provisioned = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )
    (generated,) = _doc(stack(name), DATASOURCE)["datasources"]
    (original,) = provisioned["datasources"]
    assert generated == {**original, "url": url}


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@needs_promtool
@pytest.mark.parametrize("name", [BRIDGE, "host-gpus", "per-gpu-models"])
def test_promtool_accepts_the_scrape_config_and_its_alert_rules(tmp_path: Path, name: str) -> None:
    """`promtool check config` on the generated folder succeeds, rule file included."""
    write(render(stack(name)), tmp_path)
    result = _promtool("check", "config", str(tmp_path / PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


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
