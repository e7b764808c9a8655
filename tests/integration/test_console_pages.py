"""The console's pages against a real Redis, real workers (in-process and as a process) and a
real orchestrator, over a real uvicorn; an open page in headless Chromium refreshes itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from duplex.console.app import ConsoleServer
from duplex.console.config import ConsoleConfig, ConsoleRedisConfig, ConsoleSection
from duplex.devtools.redis_server import free_port
from duplex.registry.admin import RegistryAdmin
from duplex.registry.announcer import Announcer
from duplex.registry.records import Capabilities, GpuSample, WorkerMetrics, WorkerRecord

from tests.integration.browser import open_chromium
from tests.integration.console_client import ConsoleClient, HttpResponse
from tests.integration.orchestrator_fixtures import Client, orch_config, running_orchestrator
from tests.integration.worker_fixtures import (
    running_worker,
    start_worker_process,
    stop_process,
    worker_config,
    write_worker_yaml,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "console-test-token"
WORKER_TTL_MS = 1000  # the test workers' worker_ttl_ms (heartbeats every 200 ms)
REFRESH_MS = 250
DEADLINE_S = 15.0


def console_config(redis_url: str, **section: object) -> ConsoleConfig:
    return ConsoleConfig(
        console=ConsoleSection(
            host="127.0.0.1", port=0, admin_token=TOKEN, refresh_ms=REFRESH_MS, **section
        ),
        redis=ConsoleRedisConfig(
            url=redis_url, worker_ttl_ms=WORKER_TTL_MS, reconcile_interval_ms=200
        ),
    )


@pytest.fixture
async def console(redis_url: str) -> AsyncIterator[ConsoleServer]:
    async with ConsoleServer(console_config(redis_url)) as server:
        yield server


def rows(html: str, attribute: str) -> dict[str, str]:
    """Each table row carrying `attribute` (data-worker, data-session...) -> its HTML."""
    found = {}
    for match in re.finditer(rf'<tr {attribute}="([^"]+)"(.*?)</tr>', html, re.S):
        found[match.group(1)] = match.group(2)
    return found


def field(row_html: str, name: str) -> str:
    match = re.search(rf'data-field="{name}"[^>]*>([^<]*)<', row_html)
    assert match is not None, f"no {name} in {row_html}"
    return match.group(1).strip()


async def poll(browser: ConsoleClient, path: str, predicate: object) -> HttpResponse:
    """GET `path` every refresh until `predicate(response)` (as a page's HTMX poll does)."""
    assert callable(predicate)
    async with asyncio.timeout(DEADLINE_S):
        while True:
            response = await browser.get(path, headers={"HX-Request": "true"})
            if predicate(response):
                return response
            await asyncio.sleep(REFRESH_MS / 1000)


async def test_the_workers_page_lists_every_live_worker_with_its_fields(
    redis_url: str, console: ConsoleServer
) -> None:
    """Two real workers: name, address, adapter, GPU, resident models, load, heartbeat,
    health and drained flag; a drain shows at the next refresh."""
    browser = ConsoleClient(console.url)
    async with (
        running_worker(worker_config(redis_url, name="w-alpha")) as alpha,
        running_worker(worker_config(redis_url, name="w-beta")) as beta,
    ):
        got = await poll(
            browser,
            "/fragments/workers",
            lambda r: {"w-alpha", "w-beta"} <= set(rows(r.text, "data-worker")),
        )
        listed = rows(got.text, "data-worker")
        for worker, name in ((alpha, "w-alpha"), (beta, "w-beta")):
            row = listed[name]
            assert f"grpc://{worker.target}" in row
            assert "<td>tone</td>" in row
            assert "CPU only" in row
            assert '<span class="chip">tone-fast</span>' in row
            assert field(row, "queue_depth") == "0" and field(row, "active_sessions") == "0"
            assert re.fullmatch(r"\d+\.\d{3}", field(row, "rtf"))
            age = float(field(row, "heartbeat").removesuffix(" s ago"))
            assert 0 <= age <= WORKER_TTL_MS / 1000
            assert field(row, "health") == "ok"
            assert field(row, "drained") == "serving"
        async with RegistryAdmin(redis_url) as admin:
            await admin.drain("w-beta")
        got = await poll(
            browser,
            "/fragments/workers",
            lambda r: field(rows(r.text, "data-worker").get("w-beta", ""), "drained") == "drained",
        )
        assert field(rows(got.text, "data-worker")["w-alpha"], "drained") == "serving"
        page = await browser.get("/workers")
        assert page.status == 200
        assert 'hx-get="/fragments/workers"' in page.text
        assert f'hx-trigger="every {REFRESH_MS}ms"' in page.text
        assert "w-alpha" in page.text and "w-beta" in page.text
        detail = await browser.get("/workers/w-alpha")
        assert detail.status == 200 and "tone-fast" in detail.text
        missing = await browser.get("/workers/nobody")
        assert missing.status == 404 and "no live worker named" in missing.text


async def test_the_gpu_page_says_cpu_only_with_no_gpu_on_any_worker(
    redis_url: str, console: ConsoleServer
) -> None:
    browser = ConsoleClient(console.url)
    async with running_worker(worker_config(redis_url, name="w-cpu")):
        got = await poll(browser, "/fragments/gpus", lambda r: "1 worker" in r.text)
    assert "CPU only: no GPU on any worker" in got.text
    assert "The live worker reports no GPU" in got.text
    assert 'class="card gpu"' not in got.text
    page = await browser.get("/gpus")
    assert page.status == 200 and "CPU only" in page.text


async def test_the_sessions_page_shows_a_live_session_of_a_real_orchestrator(
    redis_url: str, console: ConsoleServer
) -> None:
    browser = ConsoleClient(console.url)
    async with (
        running_worker(worker_config(redis_url, name="w-speak")),
        running_orchestrator(orch_config(redis_url)) as orchestrator,
        Client(orchestrator) as client,
    ):
        started = await client.start(model_id="tone-fast")
        assert started["type"] == "SessionStarted", started
        await client.say("Hello there.")
        session_id = str(started["session_id"])
        got = await poll(
            browser,
            "/fragments/sessions",
            lambda r: (
                session_id[:8] in rows(r.text, "data-session")
                and "ms" in field(rows(r.text, "data-session")[session_id[:8]], "first_audio_ms")
            ),
        )
        row = rows(got.text, "data-session")[session_id[:8]]
        assert "websocket" in row
        assert field(row, "worker") == "w-speak"
        assert field(row, "model") == "tone-fast"
        assert field(row, "barge_ins") == "0"
        assert float(field(row, "first_audio_ms").removesuffix(" ms")) > 0
        assert session_id not in got.text  # a prefix names it; the whole id is not shown
        orchestrators = rows(got.text, "data-orchestrator")
        assert len(orchestrators) == 1
        assert field(next(iter(orchestrators.values())), "sessions_total") == "1"
    got = await poll(browser, "/fragments/sessions", lambda r: "No live orchestrator" in r.text)
    assert not rows(got.text, "data-session")


async def test_health_and_metrics_are_open(console: ConsoleServer) -> None:
    browser = ConsoleClient(console.url)
    health = await browser.get("/health")
    assert (health.status, health.text) == (200, '{"status":"ok"}')
    metrics = await browser.get("/metrics")
    assert metrics.status == 200
    assert "duplex_console_signin_failures_total 0.0" in metrics.text
    assert "# TYPE duplex_console_actions_total counter" in metrics.text
    assert (await browser.get("/static/htmx.min.js")).status == 200


async def test_python_m_duplex_console_serves_and_stops_cleanly_on_sigterm(
    redis_url: str,
) -> None:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "CONSOLE_PORT": str(port)}
    env.pop("CONSOLE_ADMIN_TOKEN", None)
    env.pop("CONSOLE_HOST", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duplex.console",
        "--config",
        str(REPO / "config" / "console.yaml"),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        browser = ConsoleClient(f"http://127.0.0.1:{port}")
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(OSError):
                    if (await browser.get("/health")).status == 200:
                        break
                await asyncio.sleep(0.1)
        assert (await browser.get("/workers")).status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert '"msg": "console stopped"' in log or "console stopped" in log
    assert "sign-ins end when the console restarts" in log  # no session secret given


def test_help_documents_the_environment() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "duplex.console", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert shown.returncode == 0
    for name in ("--config", "CONSOLE_ADMIN_TOKEN", "CONSOLE_SESSION_SECRET", "REDIS_URL"):
        assert name in shown.stdout


# -- in a real browser -------------------------------------------------------------------------


def gpu_record(clock_start: float) -> WorkerRecord:
    """A record as a GPU worker's sampler writes it (no GPU here: it shows how the cards look)."""
    t = time.time() - clock_start
    samples = tuple(
        GpuSample(
            gpu_id=str(i),
            name="NVIDIA L4",
            util_pct=round(50 + 35 * ((t * (0.7 + i)) % 2 - 1) ** 2, 1),
            mem_used=(6 + 5 * i) * 1024**3,
            mem_total=24 * 1024**3,
            temp_c=52.0 + 6 * i,
            power_w=None if i else 61.5,
            sampled_at=time.time(),
        )
        for i in range(2)
    )
    return WorkerRecord(
        name="tts-gpu@0",
        addr="grpc://127.0.0.1:9",
        adapter_type="piper",
        capabilities=Capabilities(languages=("en",)),
        resident_models=("piper-en-joe-medium",),
        available_models=("piper-en-joe-medium",),
        metrics=WorkerMetrics(queue_depth=1, active_sessions=3, rtf=0.012),
        last_heartbeat=time.time(),
        device="cuda:0",
        gpus=samples,
    )


async def test_an_open_page_refreshes_itself_and_a_killed_worker_leaves_it(
    tmp_path: Path, redis_url: str
) -> None:
    """Signed in, Chromium opens every page (screenshots in out/screenshots/console-*.png).
    On the open Workers page, a worker process killed with SIGKILL disappears within
    worker_ttl_ms plus one refresh, without a reload."""
    config = worker_config(
        redis_url, name="w-process", heartbeat_interval_ms=200, worker_ttl_ms=WORKER_TTL_MS
    )
    process = start_worker_process(write_worker_yaml(tmp_path / "worker.yaml", config))
    start = time.time()
    announcer = Announcer(redis_url, lambda: gpu_record(start), interval_s=0.2, ttl_s=1.0)
    beating = asyncio.create_task(announcer.run())
    try:
        async with (
            running_worker(worker_config(redis_url, name="w-inproc")),
            running_orchestrator(orch_config(redis_url)) as orchestrator,
            Client(orchestrator) as client,
            ConsoleServer(console_config(redis_url)) as console,
            open_chromium(tmp_path) as page,
        ):
            assert (await client.start(model_id="tone-fast"))["type"] == "SessionStarted"
            await client.say("Hello from the console test.")
            await page.navigate(f"{console.url}/signin")
            await page.screenshot(tmp_path / "console-signin.png")
            await page.evaluate(
                f"document.querySelector('#token').value = {TOKEN!r};"
                " document.querySelector('form.form').submit()"
            )
            await page.wait_for("location.pathname === '/workers'", what="the sign-in")
            shows = "(n) => !!document.querySelector(`tr[data-worker='${n}']`)"
            await page.wait_for(f"({shows})('w-process') && ({shows})('w-inproc')", limit_s=60)
            assert await page.evaluate("document.body.getAttribute('hx-headers')")
            await page.screenshot(tmp_path / "console-workers.png")
            await page.evaluate("window.__kept = true")  # gone if the page reloads

            process.send_signal(signal.SIGKILL)
            process.wait(10)
            killed = time.monotonic()
            await page.wait_for(f"!({shows})('w-process')", limit_s=10, what="the row to go")
            gone_after = time.monotonic() - killed
            assert gone_after <= (WORKER_TTL_MS + REFRESH_MS) / 1000 + 0.5, gone_after
            assert await page.evaluate("window.__kept === true")  # refreshed, not reloaded
            assert await page.evaluate(f"({shows})('w-inproc')")

            await page.navigate(f"{console.url}/workers/w-inproc")
            await page.wait_for("!!document.querySelector('dl.facts')")
            await page.screenshot(tmp_path / "console-worker.png")

            await page.navigate(f"{console.url}/gpus")
            spark = "document.querySelectorAll('polyline.spark-line')"
            await page.wait_for(f"{spark}.length === 2", what="two GPU cards")
            first = await page.evaluate(f"{spark}[0].getAttribute('points')")
            await page.wait_for(
                f"{spark}[0].getAttribute('points') !== {first!r}", what="the sparkline to grow"
            )
            await asyncio.sleep(2)  # a few points of history for the picture
            await page.screenshot(tmp_path / "console-gpus.png")

            await page.navigate(f"{console.url}/sessions")
            await page.wait_for("!!document.querySelector('tr[data-session]')")
            await page.screenshot(tmp_path / "console-sessions.png")
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        await announcer.close()
        stop_process(process)
