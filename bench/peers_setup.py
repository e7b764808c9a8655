"""The peers' virtualenvs and versions, the voice files laid out as they expect, starting and
stopping their servers, process-tree sampling and the pair-by-pair ratios of the `peers`
section. No product imports: unit-testable alone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.stats import ratio

REPO = Path(__file__).resolve().parent.parent
PEERS_ROOT = REPO / ".run" / "bench-peers"
VOICE_NAME = "en_US-joe-medium"
MARKER = ".installed"
INSTALL_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class PeerSpec:
    """A peer: its folder name under .run/bench-peers and what pip installs there."""

    name: str
    requirement: str
    check_import: str  # a module that must import once installed
    versions: tuple[str, ...] = ()  # the packages whose versions the report records


PEER_SPECS: tuple[PeerSpec, ...] = (
    PeerSpec(
        "http-server",
        "piper-tts[http]",
        "piper.http_server",
        ("piper-tts", "onnxruntime", "flask"),
    ),
    PeerSpec(
        "wyoming-piper",
        "wyoming-piper",
        "wyoming_piper",
        ("wyoming-piper", "wyoming", "piper-tts", "onnxruntime"),
    ),
    PeerSpec(
        "pipecat",
        "pipecat-ai[piper]",
        "pipecat.services.piper.tts",
        ("pipecat-ai", "piper-tts", "onnxruntime"),
    ),
)


class InstallError(Exception):
    """A peer's virtualenv could not be made; the message is the reason for the report."""


def venv_python(root: Path, peer: PeerSpec) -> Path:
    return root / peer.name / "bin" / "python"


def ensure_venv(
    peer: PeerSpec,
    say: Callable[[str], None],
    *,
    root: Path = PEERS_ROOT,
    timeout_s: float = INSTALL_TIMEOUT_S,
) -> Path:
    """The peer's interpreter, creating its virtualenv on first use (`python3 -m venv` + pip
    from the package index); reused when the marker names the same requirement."""
    folder = root / peer.name
    python = venv_python(root, peer)
    marker = folder / MARKER
    if python.exists() and marker.exists() and marker.read_text().strip() == peer.requirement:
        return python
    folder.parent.mkdir(parents=True, exist_ok=True)
    log = root / f"{peer.name}.log"
    say(f"{peer.name}: creating {folder} and installing {peer.requirement} (log {log})")
    steps = (
        ["python3", "-m", "venv", str(folder)],
        [str(python), "-m", "pip", "install", "--progress-bar", "off", peer.requirement],
        [str(python), "-c", f"import {peer.check_import}"],
    )
    with log.open("a", encoding="utf-8") as out:
        for step in steps:
            try:
                done = subprocess.run(
                    step, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
                )
            except subprocess.TimeoutExpired:
                raise InstallError(f"`{' '.join(step[:4])}` took over {timeout_s:.0f} s") from None
            if done.returncode != 0:
                tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
                last = tail[-1] if tail else ""
                raise InstallError(f"`{' '.join(step[:4])}` exited {done.returncode}: {last}")
    marker.write_text(peer.requirement + "\n", encoding="utf-8")
    say(f"{peer.name}: installed")
    return python


def wyoming_data_dir(dest: Path, model: Path, config: Path, voice: str = VOICE_NAME) -> Path:
    """A --data-dir for wyoming-piper holding ``<voice>.onnx`` and ``<voice>.onnx.json``
    (the names its find_voice looks for), linked to the bundled files so it downloads
    nothing."""
    dest.mkdir(parents=True, exist_ok=True)
    for source, name in ((model, f"{voice}.onnx"), (config, f"{voice}.onnx.json")):
        link = dest / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source.resolve())
    return dest


class TreeSampler:
    """CPU seconds and peak RSS of some processes and all their descendants (sampled every
    50 ms on a thread; CPU of descendants that exit between samples is not counted)."""

    def __init__(self, pids: Sequence[int], interval_s: float = 0.05) -> None:
        self._roots = [psutil.Process(pid) for pid in pids]
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-rss", daemon=True)
        self._thread.start()

    def _members(self) -> list[psutil.Process]:
        members: list[psutil.Process] = []
        for root in self._roots:
            try:
                members += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        return members

    def _rss(self) -> int:
        total = 0
        for proc in self._members():
            try:
                total += int(proc.memory_info().rss)
            except psutil.Error:
                continue
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            rss = self._rss()
            with self._lock:
                self._peak = max(self._peak, rss)

    def reset_peak(self) -> None:
        rss = self._rss()
        with self._lock:
            self._peak = rss

    @property
    def peak_rss(self) -> int:
        with self._lock:
            return self._peak

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._members():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@dataclass(frozen=True)
class Figures:
    """One system at one concurrency: what the peers table compares."""

    p50_s: float
    p95_s: float
    throughput: float  # audio-s per wall-s
    cpu_per_audio: float  # CPU-s per audio-s
    peak_rss: float  # bytes


RATIO_FIELDS: tuple[tuple[str, str], ...] = (
    ("p50", "p50_s"),
    ("p95", "p95_s"),
    ("aud-s/s", "throughput"),
    ("CPU/aud-s", "cpu_per_audio"),
    ("RSS", "peak_rss"),
)


def pair_ratios(ours: Figures, theirs: Figures) -> dict[str, float]:
    """ours / theirs for every figure (below 1 is better for all but aud-s/s)."""
    return {label: ratio(getattr(ours, f), getattr(theirs, f)) for label, f in RATIO_FIELDS}


def cpu_per_audio(cpu_s: float | None, audio_s: float) -> float:
    if cpu_s is None or audio_s <= 0:
        return math.nan
    return cpu_s / audio_s


def loopback_env() -> dict[str, str]:
    """A peer's environment: no proxies, unbuffered, one onnxruntime thread not forced."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "virtual_env")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def venv_versions(python: Path, packages: Sequence[str]) -> dict[str, str]:
    """Python's and each package's version in a peer's virtualenv ("not installed", or "?"
    when the interpreter could not be asked)."""
    code = (
        "import importlib.metadata as m, json, platform, sys\n"
        "def v(p):\n"
        "    try:\n"
        "        return m.version(p)\n"
        "    except m.PackageNotFoundError:\n"
        "        return 'not installed'\n"
        "print(json.dumps({'python': platform.python_version(), "
        "**{p: v(p) for p in sys.argv[1:]}}))"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", code, *packages],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        found: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, OSError, ValueError, IndexError):
        return {"python": "?", **dict.fromkeys(packages, "?")}
    return found


async def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Until something accepts on 127.0.0.1:port; fails early if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        await asyncio.sleep(0.3)
    raise TimeoutError(f"port {port} not open within {timeout_s:.0f} s")


def log_tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-1500:]


def launch(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A peer server, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=loopback_env(), cwd=cwd
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else ""


if __name__ == "__main__":  # pragma: no cover - manual: install every peer now
    for spec in PEER_SPECS:
        try:
            print(ensure_venv(spec, print))
        except InstallError as exc:
            print(f"{spec.name}: did not install: {exc}", file=sys.stderr)
