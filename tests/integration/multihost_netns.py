"""Several "hosts" on one machine: network namespaces joined by veth pairs to a bridge in a
switch namespace (iproute2), so that all traffic stays inside namespaces the test made.

    fabric = Fabric.create(["h1", "h2"])      # 10.77.0.1, 10.77.0.2
    proc = fabric.spawn("h2", [sys.executable, "-m", "duplex.worker", ...])
    fabric.cut("h2"); fabric.restore("h2")    # the host's link down / up
    sock = fabric.connect("h1", ("10.77.0.1", 8080))   # a socket made inside h1

The test process stays in its own namespace; `connect` makes a socket inside a host from a
short-lived thread that joins the namespace (a network namespace is per thread), and the
socket keeps that namespace for its whole life.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

SUBNET = "10.77.0"
_CLONE_NEWNET = 0x40000000


def netns_available() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"dxprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Fabric:
    """Host namespaces on one bridge; every name is unique to this process."""

    prefix: str
    hosts: dict[str, str] = field(default_factory=dict)  # host -> address
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @classmethod
    def create(cls, hosts: Sequence[str]) -> Fabric:
        fabric = cls(prefix=f"dx{os.getpid()}")
        try:
            _ip("netns", "add", fabric.switch)
            _ip("-n", fabric.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", fabric.switch, "link", "set", "br0", "up")
            for index, host in enumerate(hosts, start=1):
                fabric._add_host(host, index)
        except BaseException:
            fabric.close()
            raise
        return fabric

    def _add_host(self, host: str, index: int) -> None:
        ns, port = self.ns(host), f"p{index}"
        address = f"{SUBNET}.{index}"
        _ip("netns", "add", ns)
        self.hosts[host] = address
        # Both ends are made inside their namespaces: no name is ever taken in the root one.
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", ns)  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")

    def _port(self, host: str) -> str:
        return f"p{list(self.hosts).index(host) + 1}"

    def cut(self, host: str) -> None:
        """The host's cable pulled: its switch port goes down (its packets go nowhere)."""
        _ip("-n", self.switch, "link", "set", self._port(host), "down")

    def restore(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", self._port(host), "up")

    def spawn(
        self, host: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A process inside `host` (output to a file the caller may read: `log_of`)."""
        log = open(f"/tmp/{self.ns(host)}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *argv],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.processes.append(process)
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        index = self.processes.index(process)
        for host in self.hosts:
            path = f"/tmp/{self.ns(host)}-{index}.log"
            if os.path.exists(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    return f.read()
        return ""

    def connect(self, host: str, address: tuple[str, int], timeout_s: float = 5.0) -> socket.socket:
        """A TCP socket connected from inside `host` (blocking; call it in a thread)."""
        result: list[socket.socket | BaseException] = []

        def run() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/run/netns/{self.ns(host)}", "rb") as handle:
                    if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                result.append(socket.create_connection(address, timeout_s))
            except BaseException as exc:
                result.append(exc)

        # A fresh thread each time: it ends inside the namespace and is never reused.
        thread = threading.Thread(target=run, name=f"netns-{host}")
        thread.start()
        thread.join(timeout_s + 5)
        if not result:
            raise TimeoutError(f"no connection from {host} to {address}")
        outcome = result[0]
        if isinstance(outcome, BaseException):
            raise outcome
        outcome.settimeout(None)
        return outcome

    def close(self) -> None:
        """Stop every process (SIGKILL after a grace) and delete every namespace."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for ns in [*(self.ns(h) for h in self.hosts), self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        for index in range(len(self.processes)):
            for host in self.hosts:
                path = f"/tmp/{self.ns(host)}-{index}.log"
                if os.path.exists(path):
                    os.remove(path)
