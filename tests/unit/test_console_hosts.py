"""The Workers page groups workers by the host they announce (several GPU hosts, one Redis)."""

from __future__ import annotations

import re

from duplex.console.views import addr_host, worker_rows
from duplex.registry.records import Capabilities, WorkerMetrics, WorkerRecord
from duplex.webassets import web_root
from jinja2 import Environment, FileSystemLoader

NOW = 1_700_000_000.0


def record(name: str, addr: str) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr=addr,
        adapter_type="piper",
        capabilities=Capabilities(languages=("en",)),
        resident_models=("piper-en-joe-medium",),
        available_models=("piper-en-joe-medium",),
        metrics=WorkerMetrics(queue_depth=0, active_sessions=0, rtf=0.03, underruns=0),
        last_heartbeat=NOW,
    )


def test_the_host_of_an_announced_address() -> None:
    assert addr_host("grpc://10.0.0.5:7001") == "10.0.0.5"
    assert addr_host("grpc://[fd00::5]:7001") == "fd00::5"
    assert addr_host("gpu-b.lan:7002") == "gpu-b.lan"


def test_the_workers_table_has_one_group_per_host_in_host_order() -> None:
    workers = {
        r.name: r
        for r in (
            record("b-0", "grpc://10.0.0.6:7001"),
            record("a-1", "grpc://10.0.0.5:7002"),
            record("a-0", "grpc://10.0.0.5:7001"),
        )
    }
    rows = worker_rows(workers, frozenset(), 15000, NOW)
    assert [(r.host, r.name) for r in rows] == [
        ("10.0.0.5", "a-0"), ("10.0.0.5", "a-1"), ("10.0.0.6", "b-0")
    ]  # fmt: skip
    templates = Environment(loader=FileSystemLoader(web_root() / "console" / "templates"))
    html = templates.get_template("workers_table.html").render(
        workers=rows,
        redis_ok=True,
        updated="now",
        csrf="",
        signed_in=lambda request: False,
        request=None,
    )
    groups = re.findall(r'<tbody data-host="([^"]+)">(.*?)</tbody>', html, re.S)
    assert [(host, re.findall(r'data-worker="([^"]+)"', body)) for host, body in groups] == [
        ("10.0.0.5", ["a-0", "a-1"]),
        ("10.0.0.6", ["b-0"]),
    ]
    assert '10.0.0.5 <span class="muted">· 2 workers</span>' in html
