"""A Docker engine and the product's images on a machine that cannot pull any image.

    python -m duplex.devtools.docker engine     # install docker.io if missing, start dockerd
    python -m duplex.devtools.docker base       # debootstrap -> duplex-base:bookworm (cached)
    python -m duplex.devtools.docker redis      # duplex-redis:bookworm (Debian's redis-server)
    python -m duplex.devtools.docker wheels     # .run/docker/wheels (see devtools/wheels.py)
    python -m duplex.devtools.docker images     # wheels + duplex-worker and duplex-server

`make images`, `make base-image` and `make test-compose` call these. The engine this starts
keeps every container off the machine's networks: `--bridge=none --iptables=false` leaves
only host networking and loopback, which is what the tests use. Each long step prints one
line when it starts and one with its duration, and writes its full output to a log under
.run/docker/logs/.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from duplex.devtools.extras import EXTRAS, ExtrasError, adapter_list, parse_adapters
from duplex.devtools.wheels import WheelError, WheelOptions, build_wheel_set

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / ".run" / "docker"
BASE_IMAGE = "duplex-base:bookworm"
REDIS_IMAGE = "duplex-redis:bookworm"
WORKER_IMAGE = "duplex-worker"
SERVER_IMAGE = "duplex-server"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ENGINE_START_S = 60
BUILD_TIMEOUT_S = 1200
# What a command needs -> the Debian package that brings it.
PACKAGES = {"dockerd": "docker.io", "docker": "docker.io", "docker-compose": "docker-compose"}


class DockerUnavailable(RuntimeError):
    """No engine can run here; the message says exactly why (tests skip with it)."""


class BuildFailed(RuntimeError):
    """A build step failed; the message carries the end of its log."""


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Announce a long step, then say how long it took."""
    say(f"== {what} ...")
    started = time.monotonic()
    yield
    say(f"   {what}: done in {time.monotonic() - started:.1f} s")


def fresh_log(name: str) -> Path:
    """A log file under .run/docker/logs, emptied: each operation's log shows its last run."""
    log = CACHE / "logs" / name
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    return log


def run(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    timeout_s: float = 120,
    env: dict[str, str] | None = None,
) -> str:
    """Run a command and return its stdout; stdout and stderr are appended to `log` too.
    A failure raises with the output's last lines."""
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildFailed(f"{' '.join(argv)} took over {timeout_s:.0f} s") from exc
    output = f"{result.stdout}{result.stderr}"
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(argv)}\n{output}\n")
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-20:])
        where = f" (full log: {log})" if log else ""
        raise BuildFailed(f"{' '.join(argv)} failed with {result.returncode}{where}:\n{tail}")
    return str(result.stdout)


def docker_env() -> dict[str, str]:
    """The classic builder: Debian's engine has no BuildKit plugin (buildx) to talk to."""
    return {**os.environ, "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) where it exists, else Debian's `docker-compose` (v1)."""
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return ["docker", "compose"] if probe.returncode == 0 else ["docker-compose"]


# ---- the engine ----------------------------------------------------------------------------


@dataclass
class Engine:
    """A reachable Docker engine; `process` is set when this code started it (and stops it)."""

    process: subprocess.Popen[bytes] | None
    log: Path | None

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        """Stop dockerd if it was started here (its containers stop with it)."""
        if self.process is None or self.process.poll() is not None:
            return
        with step(f"stopping the Docker engine started for this run (pid {self.process.pid})"):
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def engine_answers(timeout_s: float = 15) -> bool:
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def install_packages(commands: Sequence[str]) -> None:
    """apt-get install the Debian packages that bring `commands`, where any is missing."""
    missing = sorted({PACKAGES.get(c, c) for c in commands if shutil.which(c) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise DockerUnavailable(
            f"{', '.join(missing)} not installed and this is not root (uid {os.geteuid()}): "
            f"run 'apt-get install -y {' '.join(missing)}' as root"
        )
    if shutil.which("apt-get") is None:
        raise DockerUnavailable(f"{', '.join(missing)} not installed and there is no apt-get")
    with step(f"installing {', '.join(missing)} with apt"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        log = fresh_log("apt.log")
        run(["apt-get", "update", "-qq"], log=log, timeout_s=300, env=env)
        run(["apt-get", "install", "-y", "-qq", *missing], log=log, timeout_s=900, env=env)


def ensure_engine(data_root: Path | None = None) -> Engine:
    """An engine that answers: the running one, or dockerd started now with no bridge and no
    iptables rules (so containers get only host networking). Raises DockerUnavailable with
    the reason when none can run here."""
    install_packages(["docker", "dockerd", "docker-compose"])
    if engine_answers():
        return Engine(process=None, log=None)
    if os.geteuid() != 0:
        raise DockerUnavailable(
            f"no Docker engine answers and dockerd needs root to start (uid {os.geteuid()})"
        )
    log = CACHE / "logs" / "dockerd.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false"]
    if data_root is not None:
        argv.append(f"--data-root={data_root}")
    with step(f"starting dockerd --bridge=none --iptables=false (log: {log})"):
        with log.open("ab") as out:
            # Its own session: a Ctrl-C in the terminal must not kill it before the
            # containers are taken down; the owner stops it.
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + ENGINE_START_S
        while not engine_answers(timeout_s=5):
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
                raise DockerUnavailable(
                    f"dockerd did not start (exit {process.returncode}); its log ends:\n{tail}"
                )
            time.sleep(0.5)
    return Engine(process=process, log=log)


def image_exists(name: str) -> bool:
    probe = subprocess.run(
        ["docker", "image", "inspect", name], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


# ---- the base image ------------------------------------------------------------------------


def apt_mirror(sources: Sequence[Path] = ()) -> str:
    """The Debian mirror this machine's apt uses (deb.debian.org when none is named)."""
    files = list(sources) or [
        Path("/etc/apt/sources.list"),
        *sorted(Path("/etc/apt/sources.list.d").glob("*")),
    ]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for word in text.split():
            url = word.rstrip("/")
            if url.startswith(("http://", "https://")) and url.endswith("/debian"):
                return url
    return DEFAULT_MIRROR


def ensure_base_image(name: str = BASE_IMAGE, mirror: str | None = None) -> None:
    """A Debian 12 image with python3 and python3-venv, made here (no registry needed):
    debootstrap, then `docker import`. The root filesystem's tarball is kept in .run/docker,
    so a fresh engine imports it in seconds instead of bootstrapping again."""
    if image_exists(name):
        say(f"== base image {name}: present")
        return
    tarball = CACHE / "base-bookworm.tar"
    if not tarball.is_file():
        install_packages(["debootstrap"])
        mirror = mirror or apt_mirror()
        log = fresh_log("debootstrap.log")
        with tempfile.TemporaryDirectory(prefix="duplex-rootfs-", dir="/var/tmp") as tmp:
            rootfs = Path(tmp, "rootfs")
            with step(f"debootstrap bookworm from {mirror} (about 45 s; log: {log})"):
                run(
                    [
                        "debootstrap",
                        "--variant=minbase",
                        "--include=python3,python3-venv",
                        "bookworm",
                        str(rootfs),
                        mirror,
                    ],
                    log=log,
                    timeout_s=900,
                )
            _slim_rootfs(rootfs, mirror)
            partial = tarball.with_suffix(".partial")
            run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout_s=300)
            partial.rename(tarball)
    with step(f"docker import {tarball.name} as {name}"):
        run(["docker", "import", str(tarball), name], timeout_s=300)


def _slim_rootfs(rootfs: Path, mirror: str) -> None:
    """Drop the package cache, lists and docs; leave apt pointed at the same mirror."""
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        folder = rootfs / sub
        for entry in folder.glob("*") if folder.is_dir() else ():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.name != "lock":
                entry.unlink()
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\n"
    )


def ensure_redis_image(name: str = REDIS_IMAGE, base: str = BASE_IMAGE) -> None:
    """Debian's redis-server on the local base (compose/images/redis). apt runs inside the
    build over plain http, so this one build uses the host's network."""
    log = fresh_log("build-redis.log")
    context = ROOT / "compose" / "images" / "redis"
    with step(f"building {name} (apt install redis-server; log: {log})"):
        argv = ["docker", "build", "--network", "host", "--build-arg", f"BASE={base}"]
        run([*argv, "-t", name, str(context)], log=log, timeout_s=BUILD_TIMEOUT_S, env=docker_env())


# ---- wheels and the product's images -------------------------------------------------------


def build_wheels(options: WheelOptions, out: Path | None = None) -> Path:
    """The wheel set the Dockerfile installs (devtools/wheels.py), in .run/docker/wheels."""
    out = out or CACHE / "wheels"
    with step(f"wheels for Python {platform.python_version()} and its series ({out})"):
        try:
            build_wheel_set(ROOT, out, options, say)
        except WheelError as exc:
            raise BuildFailed(str(exc)) from exc
    return out


@dataclass(frozen=True)
class ImageSet:
    """What `build_images` builds, and from what."""

    base: str = "python:3.11-slim-bookworm"
    tag: str = "latest"
    onnxruntime: str = "onnxruntime"
    kokoro: bool = False
    gpu_adapters: str = ""  # "xtts,cosyvoice2": the GPU adapters' extras (devtools/extras.py)

    @property
    def worker(self) -> str:
        return f"{WORKER_IMAGE}:{self.tag}"

    @property
    def server(self) -> str:
        return f"{SERVER_IMAGE}:{self.tag}"


def build_images(images: ImageSet) -> None:
    """The wheel set, then the worker and server images, built with no network at all
    (`--network none`): everything they install comes from the wheels."""
    gpu_adapters = adapter_list(parse_adapters(images.gpu_adapters))
    wheels = build_wheels(WheelOptions(images.onnxruntime, images.kokoro, gpu_adapters))
    args = [
        "--network", "none",
        "--build-arg", f"BASE={images.base}",
        "--build-arg", f"WHEELS={wheels.relative_to(ROOT)}",
        "--build-arg", f"ONNXRUNTIME={images.onnxruntime}",
        "--build-arg", f"KOKORO={int(images.kokoro)}",
        "--build-arg", f"GPU_ADAPTERS={gpu_adapters}",
    ]  # fmt: skip
    for target, name in (("worker", images.worker), ("server", images.server)):
        log = fresh_log(f"build-{target}.log")
        with step(f"building {name} (target {target}, on {images.base}; log: {log})"):
            run(
                ["docker", "build", *args, "--target", target, "-t", name, str(ROOT)],
                log=log,
                timeout_s=BUILD_TIMEOUT_S,
                env=docker_env(),
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duplex.devtools.docker", description=__doc__)
    parser.add_argument("what", choices=("engine", "base", "redis", "wheels", "images"))
    parser.add_argument("--base", default="python:3.11-slim-bookworm", help="the images' BASE")
    parser.add_argument("--tag", default="latest")
    parser.add_argument("--onnxruntime", default="onnxruntime", help="or onnxruntime-gpu")
    parser.add_argument("--kokoro", action="store_true", help="add the Japanese voice")
    parser.add_argument(
        "--gpu-adapters",
        default="",
        help="add the GPU adapters' extras (torch, coqui-tts, ...): "
        + adapter_list(EXTRAS)
        + " or a part of it",
    )
    parser.add_argument("--mirror", help="Debian mirror for debootstrap (default: apt's)")
    args = parser.parse_args(argv)
    try:
        gpu_adapters = adapter_list(parse_adapters(args.gpu_adapters))
        if args.what == "wheels":
            build_wheels(WheelOptions(args.onnxruntime, args.kokoro, gpu_adapters))
            return 0
        engine = ensure_engine()
        if engine.process is not None:
            # Left running for what comes next (make up, docker-compose); the tests stop theirs.
            say(
                f"dockerd runs as pid {engine.process.pid}; stop it with: kill {engine.process.pid}"
            )
        if args.what in ("base", "redis"):
            ensure_base_image(mirror=args.mirror)
        if args.what == "redis":
            ensure_redis_image()
        if args.what == "images":
            if args.base == BASE_IMAGE:
                ensure_base_image(mirror=args.mirror)
            images = ImageSet(args.base, args.tag, args.onnxruntime, args.kokoro, gpu_adapters)
            build_images(images)
    except (DockerUnavailable, BuildFailed, ExtrasError) as exc:
        say(f"!! {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
