"""What an operator asks for (`make up GPUS=.. MODELS=.. ...`), parsed and checked.

Every input is validated here, before anything is written: a bad value is a :class:`DeployError`
that names the variable and the value, so `make up` stops with one clear line and leaves
`compose/generated/` as it was.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

MAX_GPUS = 64
"""A larger count is a typo (GPUS=100), not a server."""

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GPU_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)


class DeployError(ValueError):
    """An input the generator cannot use; the message names the variable and the value."""


class Network(Enum):
    """How the services reach each other."""

    BRIDGE = "bridge"  # production: a compose network, services found by name
    HOST = "host"  # every service on the host's network, 127.0.0.1 and distinct ports


@dataclass(frozen=True)
class WorkerSpec:
    """One worker asked for: its adapter and model, and the GPU it is pinned to (None: CPU)."""

    adapter: str
    model_id: str | None = None  # None: the adapter's first model in the catalog
    gpu: int | None = None


@dataclass(frozen=True)
class Ports:
    """Where each service listens (host ports; in bridge mode also the container ports)."""

    redis: int = 6379
    orchestrator: int = 8080
    tls: int = 8443
    console: int = 8000
    grpc_base: int = 7001  # the first worker's gRPC port; the next worker takes the next one
    metrics_base: int = 9101  # the first worker's /metrics port
    prometheus: int = 9090
    grafana: int = 3000

    def __post_init__(self) -> None:
        for name in ("redis", "orchestrator", "tls", "console", "prometheus", "grafana"):
            _port(f"{name} port", getattr(self, name))
        _port("grpc base port", self.grpc_base)
        _port("metrics base port", self.metrics_base)


@dataclass(frozen=True)
class StackOptions:
    """Everything the generator needs; the same options always give the same files."""

    workers: tuple[WorkerSpec, ...]
    monitoring: bool = True
    tls: bool = False
    tls_cert_dir: str = ""  # a folder with cert.pem and key.pem; "": the generated self-signed
    network: Network = Network.BRIDGE
    webrtc: bool = True
    image_tag: str = "latest"
    redis_image: str = "redis:7-alpine"
    base_image: str = ""  # the Dockerfile's BASE build argument; "": the Dockerfile's default
    cuda_base_image: str = ""  # BASE for the CUDA worker image; "": the Dockerfile's default
    public_host: str = "localhost"  # the name browsers use: printed URLs, console links
    subnet_prefix: str = "10.231.77"  # the bridge network's /24 (fixed addresses: see compose.py)
    ports: Ports = field(default_factory=Ports)
    # (adapter, absolute host folder) for each adapter of the stack that loads an operator's
    # weights (XTTS_MODEL_DIR, ...: deploy/weights.py), sorted by adapter.
    model_dirs: tuple[tuple[str, str], ...] = ()
    # The repository as seen from the folder the stack is written to (compose resolves the
    # build context and the grafana/ mounts from there): compose/generated/ -> ../..
    repository: str = "../.."

    def __post_init__(self) -> None:
        if not self.workers:
            raise DeployError("no worker: give GPUS a GPU, or CPU_WORKERS a count above 0")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", self.image_tag):
            raise DeployError(f"IMAGE_TAG={self.image_tag!r} is not a valid image tag")
        parts = self.subnet_prefix.split(".")
        if len(parts) != 3 or not all(p.isdigit() and int(p) < 256 for p in parts):
            raise DeployError(
                f"SUBNET={self.subnet_prefix!r}: give the first three numbers of a /24"
            )
        if not re.fullmatch(r"[A-Za-z0-9_./-]+", self.repository):
            raise DeployError(f"the repository path {self.repository!r} cannot be mounted")
        if not re.fullmatch(r"[A-Za-z0-9.:-]+", self.public_host):
            raise DeployError(f"PUBLIC_HOST={self.public_host!r} is not a host name or address")

    def model_dir(self, adapter: str) -> str:
        """The host folder with `adapter`'s weights; "" when none was given."""
        return dict(self.model_dirs).get(adapter, "")

    @property
    def gpus(self) -> tuple[int, ...]:
        """The GPUs that carry at least one worker, in order."""
        return tuple(sorted({w.gpu for w in self.workers if w.gpu is not None}))


def parse_gpus(value: str, detect: Callable[[], tuple[int, ...]]) -> tuple[int, ...]:
    """GPUS: a count ("2": GPUs 0 and 1), a list ("0,2"; "3," is GPU 3 alone) or "auto"."""
    text = value.strip()
    if text in ("", "auto"):
        return detect()
    if "," not in text:
        if not text.isdigit():
            raise DeployError(
                f"GPUS={value!r}: give a count (2), a list of GPU indices (0,2) or auto"
            )
        count = int(text)
        if count > MAX_GPUS:
            raise DeployError(f"GPUS={value!r}: more than {MAX_GPUS} GPUs")
        return tuple(range(count))
    gpus: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if not item.isdigit():
            raise DeployError(f"GPUS={value!r}: {item!r} is not a GPU index (0, 1, ...)")
        index = int(item)
        if index >= MAX_GPUS:
            raise DeployError(f"GPUS={value!r}: GPU {index} is beyond {MAX_GPUS - 1}")
        if index in gpus:
            raise DeployError(f"GPUS={value!r}: GPU {index} is listed twice")
        gpus.append(index)
    if not gpus:
        raise DeployError(f"GPUS={value!r}: the list names no GPU")
    return tuple(gpus)


def parse_models(
    value: str, gpus: Sequence[int], known: Sequence[str]
) -> dict[int, tuple[WorkerSpec, ...]]:
    """MODELS: "0:piper,1:kokoro"; "0:piper+kokoro" puts two workers on GPU 0; an adapter may
    name its model ("1:kokoro=kokoro-ja-jm_kumo"). GPUs not named get one Piper worker."""
    by_gpu: dict[int, tuple[WorkerSpec, ...]] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        gpu_text, sep, adapters = entry.partition(":")
        if not sep or not gpu_text.strip().isdigit():
            raise DeployError(
                f"MODELS={value!r}: {entry!r} is not GPU:ADAPTER (e.g. 0:piper or 0:piper+kokoro)"
            )
        gpu = int(gpu_text)
        if gpu not in gpus:
            listed = ",".join(map(str, gpus)) or "none"
            raise DeployError(f"MODELS={value!r}: GPU {gpu} is not in GPUS ({listed})")
        if gpu in by_gpu:
            raise DeployError(f"MODELS={value!r}: GPU {gpu} is named twice")
        specs = [_worker_spec(value, item.strip(), gpu, known) for item in adapters.split("+")]
        by_gpu[gpu] = tuple(specs)
    return by_gpu


def _worker_spec(models: str, item: str, gpu: int, known: Sequence[str]) -> WorkerSpec:
    adapter, _, model_id = item.partition("=")
    adapter = adapter.strip()
    if adapter not in known or not _IDENT.match(adapter):
        raise DeployError(
            f"MODELS={models!r}: unknown adapter {adapter!r} (GPU {gpu}); "
            f"known: {', '.join(sorted(known))}"
        )
    model_id = model_id.strip()
    if model_id and not _MODEL_ID.match(model_id):
        raise DeployError(f"MODELS={models!r}: {model_id!r} is not a model id")
    return WorkerSpec(adapter=adapter, model_id=model_id or None, gpu=gpu)


def plan_workers(
    gpus: Sequence[int],
    models: dict[int, tuple[WorkerSpec, ...]],
    cpu_workers: int | None,
    default_adapter: str = "piper",
) -> tuple[WorkerSpec, ...]:
    """GPU workers in GPU order (each GPU's adapters in the order given), then CPU workers.

    `cpu_workers` None: 2 when there is no GPU (a CPU-only stack), else 0; a count beside
    GPUs adds CPU Piper workers (the guide's hybrid scaling)."""
    if cpu_workers is not None and cpu_workers < 0:
        raise DeployError(f"CPU_WORKERS={cpu_workers}: give a count, 0 or more")
    count = cpu_workers if cpu_workers is not None else (0 if gpus else 2)
    workers: list[WorkerSpec] = []
    for gpu in gpus:
        workers.extend(models.get(gpu, (WorkerSpec(adapter=default_adapter, gpu=gpu),)))
    workers.extend(WorkerSpec(adapter=default_adapter) for _ in range(count))
    return tuple(workers)


def parse_flag(name: str, value: str) -> bool:
    """MONITORING, TLS, WEBRTC: 1/0 (also true/false, yes/no, on/off)."""
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise DeployError(f"{name}={value!r}: give 1 or 0")


def parse_network(value: str) -> Network:
    """NETWORK: bridge (production) or host (every service on the host network, loopback)."""
    try:
        return Network(value.strip().lower())
    except ValueError:
        raise DeployError(f"NETWORK={value!r}: give bridge or host") from None


def parse_count(name: str, value: str) -> int | None:
    """A count variable; "" means "not given" (None)."""
    text = value.strip()
    if not text:
        return None
    if not text.isdigit():
        raise DeployError(f"{name}={value!r}: give a count, 0 or more")
    return int(text)


def detect_gpus(run: Callable[[list[str]], str] | None = None) -> tuple[tuple[int, ...], str]:
    """GPUs that `nvidia-smi -L` lists, and a line saying what was found (printed by the CLI).

    No nvidia-smi, or one that fails: no GPU (a CPU-only stack), and the line says so."""
    runner = run or _run_nvidia_smi
    try:
        listing = runner(["nvidia-smi", "-L"])
    except (OSError, subprocess.SubprocessError) as exc:
        return (), f"GPUS=auto: no GPU found ({exc}); generating a CPU-only stack (GPUS=0)"
    gpus = tuple(sorted({int(m) for m in _GPU_LINE.findall(listing)}))
    if not gpus:
        return (), "GPUS=auto: nvidia-smi -L lists no GPU; generating a CPU-only stack (GPUS=0)"
    return gpus, f"GPUS=auto: nvidia-smi -L lists GPU {', '.join(map(str, gpus))}"


def _run_nvidia_smi(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]} is not installed")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True)
    return result.stdout


def _port(name: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise DeployError(f"{name} {value} is not in 1..65535")
