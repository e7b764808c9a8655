"""Prometheus's scrape config and Grafana's data source for one generated stack.

Prometheus scrapes every duplex process where this stack runs it: the orchestrator (its HTTP
port), the console, and each worker on its own metrics_port. The alert rules are the
committed compose/alerts.yml, copied beside the scrape config that loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from duplex.deploy.plan import StackPlan

SCRAPE_INTERVAL_S = 5
ALERTS_FILE = "alerts.yml"


def scrape_config(plan: StackPlan) -> dict[str, Any]:
    """prometheus.yml: one job per kind of process; every worker series also carries its own
    `worker` label (the worker's name), so the dashboards group by it, not by `instance`."""
    ports = plan.options.ports
    workers = [f"{plan.reach(w.service)}:{w.metrics_port}" for w in plan.workers]
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL_S - 1}s",
            "evaluation_interval": "15s",
        },
        "rule_files": [ALERTS_FILE],
        "scrape_configs": [
            _job("duplex-orchestrator", [f"{plan.reach('orchestrator')}:{ports.orchestrator}"]),
            _job("duplex-console", [f"{plan.reach('console')}:{ports.console}"]),
            _job("duplex-workers", workers),
        ],
    }


def _job(name: str, targets: list[str]) -> dict[str, Any]:
    return {"job_name": name, "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}


def grafana_datasource(plan: StackPlan, provisioned: Path) -> dict[str, Any]:
    """grafana/provisioning/datasources/prometheus.yml with this stack's Prometheus URL (the
    dashboards name the data source by its uid, which stays)."""
    document: dict[str, Any] = yaml.safe_load(provisioned.read_text(encoding="utf-8"))
    url = f"http://{plan.reach('prometheus')}:{plan.options.ports.prometheus}"
    for source in document["datasources"]:
        if source.get("type") == "prometheus":
            source["url"] = url
    return document
