"""Every series the Grafana dashboards query is served by a live orchestrator or a live worker.

A real redis-server, a real worker (tone voice, its own /metrics port), a real orchestrator and
the real console run one WebSocket session in which the user barges in (real Piper speech as
mic audio), plus one refused message, one refused WebRTC request and one wrong console sign-in,
so that the latency, barge-in, error and console series have samples; the three /metrics are
then scraped over HTTP and compared with the dashboards' queries, and a real Prometheus
(Debian's, where installed) scrapes them and evaluates every dashboard query. GPU series (no
GPU here) are checked in tests/unit/test_grafana_dashboard.py against what the sampler renders
with a fake NVML.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import pytest_asyncio
import redis
import yaml
from duplex.console.app import ConsoleServer
from duplex.devtools.redis_server import RedisProcess, free_port
from duplex.worker.gpu_sampler import GPU_METRIC_NAMES
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.console_client import ConsoleClient
from tests.integration.console_fleet import console_config
from tests.integration.mic_audio import frames, piper_speech, silence
from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    wait_for_workers,
)
from tests.integration.worker_fixtures import running_worker, worker_config
from tests.unit.test_grafana_dashboard import (
    all_queries,
    family_series,
    grouping_labels,
    selectors,
)

DEADLINE_S = 20.0
WORKER = "tts-dash@0"
RATE = 16000
# One long clause for the voice to say; the user talks over it.
TEXT = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
SPEECH = "Wait a moment I would like to ask you something about that."
# Series that the scenario must have given samples (not only a # TYPE line). Not sampled here:
# worker errors (a worker failing mid-stream) and model evictions.
SAMPLED_AFTER_ONE_SESSION = {
    "duplex_orch_sessions_active",
    "duplex_orch_barge_ins_total",
    "duplex_orch_barge_in_outcomes_total",
    "duplex_orch_barge_in_detect_seconds_bucket",
    "duplex_orch_barge_in_cut_seconds_bucket",
    "duplex_orch_mic_frames_total",
    "duplex_orch_protocol_errors_total",
    "duplex_orch_webrtc_signalling_errors_total",
    "duplex_orch_sessions_total",
    "duplex_orch_first_audio_seconds_bucket",
    "duplex_orch_routing_decisions_total",
    "duplex_orch_routing_decision_seconds_bucket",
    "duplex_orch_frames_sent_total",
    "duplex_worker_sessions_active",
    "duplex_worker_queue_depth",
    "duplex_worker_synthesis_seconds_bucket",
    "duplex_worker_rtf_bucket",
    "duplex_worker_first_frame_seconds_bucket",
    "duplex_worker_model_loads_total",
    "duplex_worker_model_load_seconds_bucket",
    "duplex_worker_resident_models",
    "duplex_worker_model_resident",
    "duplex_console_actions_total",
    "duplex_console_signin_failures_total",
}


@dataclass(frozen=True)
class Scrape:
    """One /metrics exposition, read as Prometheus reads it."""

    text: str

    def sampled(self) -> dict[str, list[dict[str, str]]]:
        """Series name -> the label sets of its samples."""
        out: dict[str, list[dict[str, str]]] = {}
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                out.setdefault(sample.name, []).append(dict(sample.labels))
        return out

    def declared(self) -> set[str]:
        """Every series name the exposition's families stand for, sampled or not yet (a
        labelled family renders only its # TYPE line until its first child)."""
        names: set[str] = set()
        for family in text_string_to_metric_families(self.text):
            names |= set(family_series(family.name, family.type, ()))
        return names


async def http_request(url: str, method: str = "GET") -> tuple[int, str]:
    """A plain HTTP/1.1 request over a socket, no body: (status, body as text)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    async with asyncio.timeout(DEADLINE_S):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        head = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        writer.write(f"{head}Content-Length: 0\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
    status_line, _, body = raw.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body.decode()


async def http_get(url: str) -> str:
    status, body = await http_request(url)
    assert status == 200, (url, status, body)
    return body


async def stream_mic(client: Client, chunks: list[bytes]) -> None:
    """20 ms frames at real time, as a microphone sends them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, chunk in enumerate(chunks):
        if client.closed:
            return
        await client.ws.send(chunk)
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))


async def barge_in_session(client: Client, mic: list[bytes]) -> None:
    """The voice speaks; the user talks over it until the held barge-in is settled."""
    started = await client.start(
        model_id="tone-fast", sample_rate=RATE, barge_in={"policy": "resume"}
    )
    assert started["type"] == "SessionStarted", started
    await client.text(TEXT, is_final=True)
    await client.wait_for(lambda got: len(got.utterance(0).frames) >= 25)  # 0.5 s heard
    sender = asyncio.create_task(stream_mic(client, mic))
    try:
        await client.wait_for(lambda got: got.of_type("BargeInEnd"), limit_s=DEADLINE_S)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


@dataclass(frozen=True)
class Live:
    """The running orchestrator, worker and console, and their expositions after the
    scenario."""

    orch_metrics_url: str
    worker_metrics_url: str
    console_metrics_url: str
    orch: Scrape
    worker: Scrape
    console: Scrape

    @property
    def scrapes(self) -> tuple[Scrape, Scrape, Scrape]:
        return self.orch, self.worker, self.console


@asynccontextmanager
async def live_after_scenario(redis_url: str) -> AsyncIterator[Live]:
    """A worker, an orchestrator and the console, up, after the scenario of this module's
    docstring."""
    (speech,) = piper_speech([SPEECH], RATE)
    mic = frames([silence(RATE, 300), speech], RATE)
    async with (
        running_worker(worker_config(redis_url, name=WORKER, sample_rate=RATE)) as worker,
        running_orchestrator(orch_config(redis_url)) as orch,
        ConsoleServer(console_config(redis_url)) as console,
    ):
        await wait_for_workers(orch, {WORKER})
        async with Client(orch) as client:
            await barge_in_session(client, mic)
        async with Client(orch) as client:  # text before SessionStart: an Error with a code
            await client.text("too early")
            reply = await client.ws.recv()
            assert isinstance(reply, str) and '"Error"' in reply, reply
        status, _ = await http_request(f"{orch.http_url}/whip/no-such-peer", "DELETE")
        assert status == 404
        refused = await ConsoleClient(console.url).sign_in("not-the-admin-token")
        assert refused.status in (401, 403), refused.status
        metrics_url = worker.app.metrics_url
        assert metrics_url is not None, "the test worker serves /metrics on a free port"
        orch_url = f"{orch.http_url}/metrics"
        # A session's end is counted once the orchestrator sees the close: wait for it.
        async with asyncio.timeout(DEADLINE_S):
            while True:
                orch_text = await http_get(orch_url)
                if "duplex_orch_sessions_total{" in orch_text:
                    break
                await asyncio.sleep(0.05)  # polled: a scrape has nothing to wait on
        worker_text = await http_get(metrics_url)
        console_url = f"{console.url}/metrics"
        console_text = await http_get(console_url)
        yield Live(
            orch_url,
            metrics_url,
            console_url,
            Scrape(orch_text),
            Scrape(worker_text),
            Scrape(console_text),
        )


def dashboard_series() -> dict[str, set[str]]:
    """Non-GPU series the dashboards query -> labels they match or group on."""
    wanted: dict[str, set[str]] = {}
    for query in all_queries():
        found = selectors(query.expr)
        for selector in found:
            if selector.name.startswith("worker_gpu_"):
                continue
            labels = wanted.setdefault(selector.name, set())
            labels |= selector.matched | (grouping_labels(query.expr) - {"le"})
    return wanted


# The scenario runs once for both tests (in one event loop for the module).
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(redis_process: RedisProcess) -> AsyncIterator[Live]:
    """The scenario, on an empty redis-server; the processes stay up for the module's tests."""
    client = redis.Redis.from_url(redis_process.url)
    client.flushall()
    client.close()
    async with live_after_scenario(redis_process.url) as running:
        yield running


async def test_live_processes_serve_every_non_gpu_series_the_dashboards_query(
    live: Live,
) -> None:
    """Each queried series is in a scrape of the orchestrator, the worker or the console;
    where sampled, with every label the dashboards match or group on; the scenario gives the
    latency, routing, barge-in, error and console series samples."""
    wanted = dashboard_series()
    for prefix in ("duplex_orch_", "duplex_worker_", "duplex_console_"):
        assert any(n.startswith(prefix) for n in wanted), prefix
    declared = set().union(*(scrape.declared() for scrape in live.scrapes))
    missing = set(wanted) - declared
    assert not missing, f"queried but not served: {sorted(missing)}"

    sampled = {name: s for scrape in live.scrapes for name, s in scrape.sampled().items()}
    not_sampled = SAMPLED_AFTER_ONE_SESSION - set(sampled)
    assert not not_sampled, f"no samples after the scenario: {sorted(not_sampled)}"
    for name, labels in wanted.items():
        for sample_labels in sampled.get(name, []):
            assert labels <= set(sample_labels), (name, labels, sample_labels)

    # The fleet's routing-by-worker and the workers dashboard name a worker alike.
    routed = {s["worker"] for s in sampled["duplex_orch_routing_decisions_total"]}
    assert routed == {WORKER}
    assert {s["worker"] for s in sampled["duplex_worker_queue_depth"]} == {WORKER}
    # GPU series: all of them (a GPU here) or none (CPU only), never a part.
    gpu = {name for name in sampled if name.startswith("worker_gpu_")}
    assert gpu in (set(), set(GPU_METRIC_NAMES)), sorted(gpu)


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian: apt-get install --no-install-recommends prometheus)",
)
async def test_live_expositions_pass_promtool_check_metrics(
    live: Live,
) -> None:
    """The three scrapes follow Prometheus's naming and exposition rules
    (`promtool check metrics`)."""
    promtool = shutil.which("promtool")
    assert promtool is not None
    for scrape in live.scrapes:
        result = await asyncio.to_thread(
            subprocess.run,
            [promtool, "check", "metrics"],
            input=scrape.text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


PROMETHEUS = shutil.which("prometheus")


@asynccontextmanager
async def running_prometheus(targets: list[str], directory: Path) -> AsyncIterator[str]:
    """Debian's Prometheus on a free loopback port, scraping `targets` every second; its URL."""
    assert PROMETHEUS is not None
    config = directory / "prometheus.yml"
    scrape = {"job_name": "duplex", "static_configs": [{"targets": targets}]}
    global_ = {"scrape_interval": "1s", "scrape_timeout": "1s"}
    config.write_text(yaml.safe_dump({"global": global_, "scrape_configs": [scrape]}))
    port = free_port()
    with (directory / "prometheus.log").open("w") as log:
        process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def instant_query(prometheus: str, expr: str) -> dict[str, Any]:
    """`/api/v1/query` for `expr` now (its JSON: status, data.result)."""
    status, body = await http_request(f"{prometheus}/api/v1/query?{urlencode({'query': expr})}")
    answer: dict[str, Any] = json.loads(body)
    assert status == 200 and answer["status"] == "success", (expr, status, body)
    return answer


def evaluable(expr: str) -> str:
    """A dashboard query with Grafana's variables given the values Grafana would use here."""
    expr = re.sub(r"\$__rate_interval", "10s", expr)  # 4 scrape intervals and more
    return re.sub(r"\$\{?\w+\}?", ".*", expr)  # $worker: All


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus not installed (Debian: apt-get install --no-install-recommends prometheus)",
)
async def test_a_real_prometheus_answers_every_query_whose_series_are_served(
    live: Live, tmp_path: Path
) -> None:
    """Prometheus (Debian's 2.42) scrapes the live orchestrator, worker and console; every
    dashboard query whose series they serve evaluates to data, as a Grafana panel shows it."""
    urls = (live.orch_metrics_url, live.worker_metrics_url, live.console_metrics_url)
    targets = [urlsplit(url).netloc for url in urls]
    sampled = {name for scrape in live.scrapes for name in scrape.sampled()}
    async with running_prometheus(targets, tmp_path) as prometheus:
        # Two scrapes of each target at least: rate() and increase() need two samples. (Its
        # service discovery hands the targets to the scrapers after about 5 s.)
        async with asyncio.timeout(DEADLINE_S):
            while True:
                with contextlib.suppress(OSError, ValueError, AssertionError):
                    answer = await instant_query(prometheus, "count_over_time(up[1m]) >= 2")
                    if len(answer["data"]["result"]) == len(targets):
                        break
                await asyncio.sleep(0.2)  # polled: Prometheus is a separate process
        answered = 0
        for query in all_queries():
            answer = await instant_query(prometheus, evaluable(query.expr))
            if {s.name for s in selectors(query.expr)} <= sampled:
                assert answer["data"]["result"], f"no data: {query.dashboard} / {query.panel}"
                answered += 1
        assert answered >= len(all_queries()) * 2 // 3, answered
