"""The Grafana dashboards query only series that duplex processes export, by labels those series
have, through the provisioned data source; the provisioning matches the compose files.

What is exported comes from the processes' own registries (orchestrator, worker, console) and,
for the GPU gauges, from the worker's GPU sampler run against a fake NVML.

The helpers here (`dashboard_queries`, `selectors`, `exported_series`, ...) are also used by
tests/unit/test_prometheus_config.py and tests/integration/test_dashboard_metrics.py.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from duplex.console.metrics import ConsoleMetrics
from duplex.orchestrator.metrics import OrchestratorMetrics
from duplex.worker.gpu_sampler import GPU_LABELS, GPU_METRIC_NAMES, GpuSampler
from duplex.worker.metrics import METRIC_NAMES as WORKER_METRIC_NAMES
from duplex.worker.metrics import WorkerPromMetrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "duplex.yml"
COMPOSE = ROOT / "compose" / "examples" / "two-gpu.yml"  # make config GPUS=2

# -- what the processes export ----------------------------------------------------------------

Series = Mapping[str, frozenset[str]]
"""Series name (as a query writes it: `_total`, `_bucket`, ...) -> its label names."""

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def family_series(name: str, kind: str, labels: Iterable[str]) -> dict[str, frozenset[str]]:
    """The series one metric family renders, each with its label names (`le` on buckets)."""
    base = name.removesuffix("_total") if kind == "counter" else name
    out: dict[str, frozenset[str]] = {}
    for suffix in _SUFFIXES[kind]:
        extra = {"le"} if suffix == "_bucket" else set()
        out[f"{base}{suffix}"] = frozenset(labels) | extra
    return out


def registry_series(registry: CollectorRegistry) -> dict[str, frozenset[str]]:
    """Every series a registry can render, with label names, even for families with no sample
    yet (a labelled metric renders nothing until its first child)."""
    out: dict[str, frozenset[str]] = {}
    collectors = list(registry._collector_to_names)  # no public way to list the collectors
    for collector in collectors:
        labels = getattr(collector, "_labelnames", None)
        if labels is not None:
            name, kind = getattr(collector, "_name"), getattr(collector, "_type")  # noqa: B009
            out.update(family_series(name, kind, labels))
            continue
        # A custom collector: its families and labels are what it yields now.
        for family in collector.collect():
            seen = {k for s in family.samples for k in s.labels} - {"le", "quantile"}
            out.update(family_series(family.name, family.type, seen))
    # prometheus_client keeps names and labels in private fields: fail loudly if that changes.
    read = {getattr(c, "_name", None) for c in collectors} - {None}
    assert read <= {f.name for f in registry.collect()}, read
    return out


def orchestrator_series() -> dict[str, frozenset[str]]:
    """What one orchestrator's /metrics can hold (services/duplex/orchestrator/metrics.py)."""
    return registry_series(OrchestratorMetrics().registry)


class FakeNvml:
    """Just enough of pynvml for the GPU sampler: two GPUs with fixed readings."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def nvmlInit(self) -> None:
        return None

    def nvmlShutdown(self) -> None:
        return None

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-0000000{handle}"

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"Fake GPU"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=40 + handle, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=2 << 30, total=24 << 30, free=22 << 30)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 55

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 120_000  # mW


class FakeNvmlNoGpu(FakeNvml):
    """A driver that sees no GPU."""

    def nvmlDeviceGetCount(self) -> int:
        return 0


def scraped_series(exposition: str) -> dict[str, frozenset[str]]:
    """Series names and their label names as a Prometheus text exposition holds them."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in out.items()}


def worker_series() -> dict[str, frozenset[str]]:
    """What one worker's /metrics can hold, GPU series aside (services/duplex/worker/metrics.py)."""
    registry = WorkerPromMetrics("tts-test@0").registry
    families = {f.name for f in registry.collect()}
    assert families == {n.removesuffix("_total") for n in WORKER_METRIC_NAMES}
    return registry_series(registry)


def gpu_series() -> dict[str, frozenset[str]]:
    """The GPU sampler's gauges as it renders them with a (fake) GPU: only on GPU machines."""
    registry = CollectorRegistry(auto_describe=True)
    sampler = GpuSampler("tts-test@0", registry, interval_s=3600.0, nvml=FakeNvml(), environ={})
    sampler.start()
    try:
        series = scraped_series(generate_latest(registry).decode())
    finally:
        assert sampler.stop()
    assert set(series) == set(GPU_METRIC_NAMES), "the sampler renders what it declares"
    assert all(labels == set(GPU_LABELS) for labels in series.values())
    return series


def console_series() -> dict[str, frozenset[str]]:
    """What the console's /metrics can hold (services/duplex/console/metrics.py)."""
    return registry_series(ConsoleMetrics().registry)


def exported_series() -> dict[str, frozenset[str]]:
    """Every series any duplex process exports, by name."""
    parts = (orchestrator_series(), worker_series(), gpu_series(), console_series())
    names = [n for part in parts for n in part]
    assert len(names) == len(set(names)), "two processes export one name"
    return {k: v for part in parts for k, v in part.items()}


# -- what the dashboards query ------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One PromQL expression a dashboard runs: a panel target or a template variable."""

    dashboard: str
    panel: str
    expr: str
    legend: str
    datasource_uid: str | None


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([^,]+?)\s*,\s*([A-Za-z_]\w*)\s*\)\s*$")


def dashboard_queries(path: Path) -> list[Query]:
    """Panel targets and template-variable queries (`label_values(m, l)` read as
    `group by (l) (m)`, the series and label it needs)."""
    dashboard = load(path)
    out: list[Query] = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            ds = target.get("datasource", {}).get("uid")
            out.append(Query(path.name, panel["title"], target["expr"], target["legendFormat"], ds))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        assert match, f"{path.name} ${variable['name']}: only label_values(metric, label) is read"
        expr = f"group by ({match[2]}) ({match[1]})"
        ds = variable.get("datasource", {}).get("uid")
        out.append(Query(path.name, f"${variable['name']}", expr, "", ds))
    return out


def all_queries() -> list[Query]:
    return [q for path in dashboard_files() for q in dashboard_queries(path)]


@dataclass(frozen=True)
class Selector:
    """A series name in an expression and the label names its `{...}` matches on."""

    name: str
    matched: frozenset[str]


_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<range>\[[^\]]*\])
      | (?P<number>(?:\d+(?:ms|[smhdwy]))+|\d*\.?\d+(?:[eE][-+]?\d+)?)
      | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<brace>\{[^}]*\})
      | (?P<variable>\$\w+|\$\{\w+\})
      | (?P<other>[-+*/%^(),=!<>~]+)
    """,
    re.VERBOSE,
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _GROUPING | {"bool", "and", "or", "unless", "offset", "inf", "nan", "atan2"}
_MATCHER = re.compile(r"""([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*(?:"(?:[^"\\]|\\.)*"|'[^']*')""")


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        assert match, f"cannot read {expr[pos:]!r} in {expr!r}"
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def _next_is(tokens: list[tuple[str, str]], i: int, text: str) -> bool:
    return i + 1 < len(tokens) and tokens[i + 1][1].startswith(text)


def selectors(expr: str) -> list[Selector]:
    """The series an expression reads: identifiers that are neither functions, keywords nor
    label lists, with the labels of their matchers. A bare `{...}` selector is refused."""
    tokens = _tokens(expr)
    out: list[Selector] = []
    skip_list = False
    for i, (kind, text) in enumerate(tokens):
        if kind == "ident" and text in _GROUPING:
            skip_list = _next_is(tokens, i, "(")  # a label list follows (group_left may have none)
            continue
        if skip_list:
            if kind == "other" and ")" in text:
                skip_list = False
            continue
        if kind == "brace":
            previous = tokens[i - 1] if i else ("", "")
            assert previous[0] == "ident", f"a selector without a metric name in {expr!r}"
            continue
        if kind != "ident" or text in _KEYWORDS or _next_is(tokens, i, "("):
            continue
        if i + 1 < len(tokens) and tokens[i + 1][1] in {"by", "without"}:
            continue  # an aggregation: `sum by (le) (...)`
        matched: frozenset[str] = frozenset()
        if i + 1 < len(tokens) and tokens[i + 1][0] == "brace":
            matched = frozenset(_MATCHER.findall(tokens[i + 1][1]))
        out.append(Selector(text, matched))
    return out


_GROUP_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by / without / on / ignoring / group_* lists."""
    labels = {label.strip() for group in _GROUP_LIST.findall(expr) for label in group.split(",")}
    return labels - {""}


def legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}", legend))


def queried_names(queries: Iterable[Query]) -> set[str]:
    return {s.name for q in queries for s in selectors(q.expr)}


def provisioned_uids() -> set[str]:
    provisioned = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    return {ds["uid"] for ds in provisioned["datasources"]}


# -- the tests ----------------------------------------------------------------------------------


def test_the_readers_understand_what_they_read() -> None:
    """The query reader finds series, matchers and groupings (so the checks below are real)."""
    expr = (
        'histogram_quantile(0.95, sum by (le, worker) (rate(duplex_worker_rtf_bucket{worker=~"$w"}'
        "[$__rate_interval]))) / on (worker) group_left max(up) by (worker) offset 5m"
    )
    assert selectors(expr) == [
        Selector("duplex_worker_rtf_bucket", frozenset({"worker"})),
        Selector("up", frozenset()),
    ]
    assert grouping_labels(expr) == {"le", "worker"}
    assert legend_labels("{{worker}} gpu {{ gpu_id }}") == {"worker", "gpu_id"}
    counter = family_series("duplex_x_total", "counter", ("a",))
    assert counter == {"duplex_x_total": {"a"}, "duplex_x_created": {"a"}}
    with pytest.raises(AssertionError):
        selectors('sum({job="x"})')


def test_there_are_fleet_worker_and_gpu_dashboards_with_distinct_uids() -> None:
    """Three dashboards: fleet overview, workers, GPUs; uids and titles distinct."""
    dashboards = {path.name: load(path) for path in dashboard_files()}
    assert set(dashboards) == {"duplex-fleet.json", "duplex-workers.json", "duplex-gpus.json"}
    uids = [d["uid"] for d in dashboards.values()]
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    assert all(d["schemaVersion"] >= 39 and "duplex" in d["tags"] for d in dashboards.values())


def test_every_queried_series_is_one_a_duplex_process_exports() -> None:
    """Each series in a panel or variable query (any name, not only duplex_*) is exported."""
    exported = exported_series()
    rendered = OrchestratorMetrics().render().decode()
    assert "duplex_orch_sessions_active" in rendered  # the registry really is the one scraped
    queries = all_queries()
    assert queries, "the dashboards query nothing"
    for query in queries:
        unknown = {s.name for s in selectors(query.expr)} - set(exported)
        assert not unknown, f"{query.dashboard} / {query.panel}: not exported: {sorted(unknown)}"


def test_every_matched_grouped_or_charted_label_exists_on_its_series() -> None:
    """`{worker=~..}` labels exist on that series; `by (...)` labels on every series of the
    query; a legend's `{{label}}` survives the query's aggregation."""
    exported = exported_series()
    for query in all_queries():
        where = f"{query.dashboard} / {query.panel}: {query.expr}"
        found = selectors(query.expr)
        assert found, f"{where}: reads no series"
        found = [s for s in found if s.name in exported]  # unknown names: the test above
        if not found:
            continue
        for selector in found:
            assert selector.matched <= exported[selector.name], where
        for label in grouping_labels(query.expr):
            assert all(label in exported[s.name] for s in found), f"{label} in {where}"
        kept = grouping_labels(query.expr) or set.intersection(
            *(set(exported[s.name]) for s in found)
        )
        assert legend_labels(query.legend) <= kept, f"legend {query.legend!r} of {where}"


def test_quantiles_read_buckets_and_keep_le() -> None:
    """histogram_quantile reads `_bucket` series of histograms and keeps `le` in its sum."""
    exported = exported_series()
    quantiles = [q for q in all_queries() if "histogram_quantile" in q.expr]
    assert quantiles
    for query in quantiles:
        for selector in selectors(query.expr):
            assert selector.name.endswith("_bucket"), query.expr
            assert "le" in exported[selector.name], query.expr
        assert "le" in grouping_labels(query.expr), query.expr


def test_every_query_uses_the_provisioned_data_source() -> None:
    """Panels, targets and variables name the provisioned Prometheus uid; only text and row
    panels have no queries."""
    uids = provisioned_uids()
    assert uids == {"prometheus"}
    for query in all_queries():
        assert query.datasource_uid in uids, (query.dashboard, query.panel)
    for path in dashboard_files():
        for panel in panels(load(path)):
            if panel["type"] in {"text", "row"}:
                assert not panel.get("targets"), (path.name, panel["title"])
                continue
            assert panel["targets"], (path.name, panel["title"])
            assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])


def test_panel_ids_ref_ids_and_layout_are_consistent() -> None:
    """Panel ids are distinct per dashboard, refIds per panel; panels fit 24 columns and do not
    overlap."""
    for path in dashboard_files():
        all_panels = list(panels(load(path)))
        ids = [p["id"] for p in all_panels]
        assert len(ids) == len(set(ids)), path.name
        cells: dict[tuple[int, int], str] = {}
        for panel in all_panels:
            refs = [t["refId"] for t in panel.get("targets", [])]
            assert len(refs) == len(set(refs)), (path.name, panel["title"])
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (path.name, panel["title"])
            for cell in itertools.product(
                range(pos["x"], pos["x"] + pos["w"]), range(pos["y"], pos["y"] + pos["h"])
            ):
                assert cell not in cells, f"{path.name}: {panel['title']} over {cells[cell]}"
                cells[cell] = panel["title"]


def test_the_fleet_overview_charts_what_an_operator_asks_first() -> None:
    """Sessions by transport, first audio p50/p95, barge-in p95 (detect and cut), errors by
    code, failovers and routing decisions by worker."""
    queries = dashboard_queries(DASHBOARDS / "duplex-fleet.json")
    wanted = {
        "duplex_orch_sessions_active": "transport",
        "duplex_orch_protocol_errors_total": "code",
        "duplex_orch_routing_decisions_total": "worker",
        "duplex_orch_barge_in_detect_seconds_bucket": "le",
        "duplex_orch_barge_in_cut_seconds_bucket": "le",
        "duplex_orch_failovers_total": None,
    }
    for name, label in wanted.items():
        using = [q for q in queries if name in {s.name for s in selectors(q.expr)}]
        assert using, name
        assert label is None or any(label in grouping_labels(q.expr) for q in using), name
    first_audio = [q.expr for q in queries if "duplex_orch_first_audio_seconds_bucket" in q.expr]
    assert any("histogram_quantile(0.5," in e for e in first_audio)
    assert any("histogram_quantile(0.95," in e for e in first_audio)


def test_the_workers_dashboard_charts_every_worker_metric() -> None:
    """Queue depth, RTF, residency, loads, evictions, first frame, under-runs: every family."""
    queried = queried_names(dashboard_queries(DASHBOARDS / "duplex-workers.json"))
    families = {name.removesuffix("_total") for name in WORKER_METRIC_NAMES}
    charted = {n.removesuffix("_total").removesuffix("_bucket") for n in queried}
    assert families <= charted, sorted(families - charted)


def test_the_gpu_dashboard_charts_every_gpu_gauge_per_gpu_id() -> None:
    """Every name the sampler declares is charted, only those, grouped by gpu_id and worker."""
    queries = [q for q in dashboard_queries(DASHBOARDS / "duplex-gpus.json") if q.legend]
    assert queried_names(queries) == set(GPU_METRIC_NAMES)
    for query in queries:
        if query.panel.startswith("GPU "):
            assert {"gpu_id", "worker"} <= grouping_labels(query.expr), query.expr


def test_the_gpu_dashboard_says_that_no_series_means_cpu_only() -> None:
    """Without a GPU the sampler renders no GPU series at all; a text panel explains that
    empty state and the GPU count says so."""
    registry = CollectorRegistry(auto_describe=True)
    sampler = GpuSampler("tts-cpu@0", registry, interval_s=3600.0, nvml=FakeNvmlNoGpu())
    sampler.start()
    assert sampler.stop()
    assert "worker_gpu_" not in generate_latest(registry).decode()
    dashboard = load(DASHBOARDS / "duplex-gpus.json")
    texts = [p["options"]["content"] for p in panels(dashboard) if p["type"] == "text"]
    assert any("No series here means the workers run CPU-only" in t for t in texts)
    counts = [p for p in panels(dashboard) if p["title"] == "GPUs reporting"]
    assert counts and "CPU-only" in counts[0]["fieldConfig"]["defaults"]["noValue"]


def test_provisioning_loads_the_dashboards_folder_that_compose_mounts() -> None:
    """The provider's path is where compose mounts grafana/dashboards, in folder "duplex"; the
    data source points at compose's Prometheus service."""
    providers = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert [p["folder"] for p in providers] == ["duplex"]
    assert providers[0]["type"] == "file"
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["grafana"]["volumes"])
    assert mounts["../../grafana/dashboards"] == providers[0]["options"]["path"]
    assert mounts["../../grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    (source,) = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose and "127.0.0.1:9090:9090" in compose["prometheus"]["ports"]


# -- the TypeScript check (grafana/check: @grafana/schema 11.1 + tsc --strict) -------------------

CHECK = GRAFANA / "check"
_NODE, _NPM = shutil.which("node"), shutil.which("npm")


def _checker_ready() -> Path:
    """grafana/check with its pinned packages installed (`npm ci` the first time)."""
    if _NODE is None or _NPM is None:
        pytest.skip("node and npm are needed for the dashboard type check (Debian: nodejs, npm)")
    if not (CHECK / "node_modules" / "typescript").is_dir():
        installed = subprocess.run(
            [_NPM, "ci", "--no-audit", "--no-fund"],
            cwd=CHECK,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if installed.returncode != 0:
            pytest.skip(f"npm ci failed in grafana/check (no registry?): {installed.stderr[-500:]}")
    return CHECK


def _type_check(checker: Path, dashboards: Path) -> subprocess.CompletedProcess[str]:
    assert _NODE is not None
    generated = subprocess.run(
        [_NODE, "generate.mjs", str(dashboards)], cwd=checker, capture_output=True, text=True
    )
    assert generated.returncode == 0, generated.stderr
    tsc = checker / "node_modules" / "typescript" / "bin" / "tsc"
    return subprocess.run(
        [_NODE, str(tsc), "-p", "tsconfig.json"],
        cwd=checker,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_dashboard_passes_the_grafana_schema_type_check() -> None:
    """Each dashboard JSON is a `Dashboard` of @grafana/schema 11.1 (the Grafana compose runs),
    its panels typed by their plugins' options (tsc --strict)."""
    result = _type_check(_checker_ready(), DASHBOARDS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_type_check_rejects_a_wrong_panel_option(tmp_path: Path) -> None:
    """The check is real: a misspelt legend mode is refused, naming the allowed values."""
    checker = _checker_ready()
    copy = tmp_path / "check"
    copy.mkdir()
    for name in ("package.json", "tsconfig.json", "panels.ts", "generate.mjs"):
        shutil.copy(checker / name, copy / name)
    (copy / "node_modules").symlink_to(checker / "node_modules")
    dashboards = tmp_path / "dashboards"
    dashboards.mkdir()
    fleet = (DASHBOARDS / "duplex-fleet.json").read_text(encoding="utf-8")
    assert '"displayMode": "list"' in fleet
    bad = fleet.replace('"displayMode": "list"', '"displayMode": "lists"', 1)
    (dashboards / "duplex-fleet.json").write_text(bad, encoding="utf-8")
    result = _type_check(copy, dashboards)
    assert result.returncode != 0
    assert "'\"lists\"' is not assignable" in result.stdout, result.stdout
