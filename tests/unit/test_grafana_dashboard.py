"""The Grafana dashboard queries only what the orchestrator exports, by the labels it has."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from duplex.orchestrator.metrics import OrchestratorMetrics

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "duplex-orchestrator.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}
_METRIC = re.compile(r"\b(duplex_[a-z0-9_]+)")
_BY = re.compile(r"\bby \(([^)]*)\)")


def _exported() -> dict[str, frozenset[str]]:
    """Every series name the orchestrator's registry exposes, with its label names."""
    metrics = OrchestratorMetrics()
    labels: dict[str, frozenset[str]] = {}
    for attr in vars(metrics).values():
        names = getattr(attr, "_labelnames", None)
        family = getattr(attr, "_name", None)
        kind = getattr(attr, "_type", None)
        if names is None or family is None or kind not in _SUFFIXES:
            continue
        for suffix in _SUFFIXES[kind]:
            extra = {"le"} if suffix == "_bucket" else set()
            labels[f"{family}{suffix}"] = frozenset(names) | extra
    # prometheus_client keeps names and labels in private fields: fail loudly if that changes.
    found = {getattr(a, "_name", None) for a in vars(metrics).values()} - {None}
    assert found == {f.name for f in metrics.registry.collect()}
    return labels


def _targets() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_queried_metric_is_exported_by_the_orchestrator() -> None:
    """Each duplex_* name in a panel query is a series OrchestratorMetrics renders."""
    exported = _exported()
    rendered = OrchestratorMetrics().render().decode()
    assert "duplex_orch_sessions_active" in rendered  # the registry really is the one scraped
    queried = {name for t in _targets() for name in _METRIC.findall(t["expr"])}
    assert queried, "the dashboard queries nothing"
    assert not queried - set(exported), f"not exported: {sorted(queried - set(exported))}"


def test_every_aggregation_label_exists_on_its_metric() -> None:
    """`by (worker)`, `by (code)`, ... name labels that the queried metric has."""
    exported = _exported()
    for target in _targets():
        names = _METRIC.findall(target["expr"])
        for group in _BY.findall(target["expr"]):
            for label in (part.strip() for part in group.split(",")):
                assert all(label in exported[n] for n in names), (label, target["expr"])


def test_the_dashboard_uses_the_provisioned_data_source_and_unique_panel_ids() -> None:
    """Targets point at the provisioned Prometheus uid; panel ids and refIds are distinct."""
    provisioned = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    uids = {ds["uid"] for ds in provisioned["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"])
