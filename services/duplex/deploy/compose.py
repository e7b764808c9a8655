"""The compose file: Redis, one worker service per GPU (or CPU workers), the orchestrator, the
console, and Prometheus and Grafana behind the `monitoring` profile.

Two network modes:

* **bridge** (production): a compose network with a fixed /24 and a fixed address per service.
  The addresses are fixed because, with WebRTC on, the orchestrator runs on the host's network:
  aiortc picks its ICE UDP ports at random, so no `ports:` mapping can publish them. Docker's
  DNS does not answer there, so it reaches Redis through an `extra_hosts` entry and the workers
  at the fixed addresses they announce (the host reaches a compose network's addresses).
* **host** (`NETWORK=host`, what the compose test runs): every service on the host's network
  with 127.0.0.1 addresses and distinct ports, and no `ports:` or `networks:` key (an override
  file cannot remove those keys, so the generator writes this variant itself).

Secrets are never in the file: it names `${API_KEYS}`, `${CONSOLE_ADMIN_TOKEN}`, ... which
compose takes from the env file `make up` passes (the repo's `.env`; see secrets.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from duplex.deploy.configs import CONFIG_MOUNT, TLS_MOUNT
from duplex.deploy.plan import StackPlan, WorkerPlan
from duplex.deploy.weights import MODEL_DIR_VARIABLES, container_dir, needs_weights
from duplex.deploy.yamltext import Flow
from duplex.devtools.extras import EXTRAS

PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
GRAFANA_IMAGE = "grafana/grafana:11.1.0"
MONITORING_PROFILE = "monitoring"
NETWORK_NAME = "duplex"
WORKER_IMAGE = "duplex-worker"
CUDA_WORKER_IMAGE = "duplex-worker-cuda"
SERVER_IMAGE = "duplex-server"
DOCKERFILE = "Dockerfile"
PROMETHEUS_MOUNT = "/etc/prometheus/duplex"
REDIS_KEYSPACE_EVENTS = "Kghxsz"  # what the orchestrator's and console's live views listen to
STOP_GRACE = "20s"  # a worker drains for worker.drain_grace_s (10 s) before it exits

_RESTART = "unless-stopped"


def required(variable: str) -> str:
    """A value compose takes from the env file, refusing to start without it."""
    return f"${{{variable}:?{variable} is not set: run make up, or set it in .env}}"


def optional(variable: str) -> str:
    """A value compose takes from the env file when set (empty: the config file's value)."""
    return f"${{{variable}:-}}"


CONFIG_LABEL = "io.duplex.config-digest"
"""A label holding the digest of the files a service mounts (see render.py)."""


def compose_document(plan: StackPlan, digests: Mapping[str, str]) -> dict[str, Any]:
    """The whole file as plain data, in the order it is written. `digests`: service -> the
    digest of the generated files it mounts, written as a label so that compose recreates
    the service when they change (a running process reads its config only at start)."""
    services: dict[str, Any] = {"redis": _redis(plan)}
    for worker in plan.workers:
        services[worker.service] = _worker(plan, worker)
    services["orchestrator"] = _orchestrator(plan)
    services["console"] = _console(plan)
    if plan.options.monitoring:
        services["prometheus"] = _prometheus(plan)
        services["grafana"] = _grafana(plan)
    for name, value in digests.items():
        services[name]["labels"] = {CONFIG_LABEL: value}
    document: dict[str, Any] = {"services": services}
    volumes: dict[str, Any] = {"redis-data": {}}
    if plan.options.monitoring:
        volumes["prometheus-data"] = {}
    document["volumes"] = volumes
    if not plan.host_mode:
        subnet = f"{plan.options.subnet_prefix}.0/24"
        document["networks"] = {NETWORK_NAME: {"ipam": {"config": [{"subnet": subnet}]}}}
    return document


def python_command(module: str, *args: str) -> Flow:
    """`python -m module args...`: every process of the stack is started this way."""
    return Flow(["python", "-m", module, *args])


def probe(kind: str, *args: str) -> dict[str, Any]:
    """A healthcheck that really asks the process (duplex.deploy.probe)."""
    return {"test": Flow(["CMD", *python_command("duplex.deploy.probe", kind, *args)])}


def _build(plan: StackPlan, target: str, args: dict[str, str]) -> dict[str, Any]:
    """The Dockerfile's stage `target` (worker or server), built from the repository with no
    network: everything the image installs comes from the wheels made on the host."""
    build: dict[str, Any] = {
        "context": plan.options.repository,
        "dockerfile": DOCKERFILE,
        "target": target,
        "network": "none",
    }
    if args:
        build["args"] = args
    return build


def worker_image(plan: StackPlan, worker: WorkerPlan) -> tuple[str, dict[str, str]]:
    """The worker's image and its build arguments: the CUDA variant (onnxruntime-gpu on a CUDA
    base) for a GPU worker, the slim CPU one otherwise; `-kokoro` adds the Japanese voice,
    `-xtts` / `-cosyvoice2` that GPU adapter's torch stack (GPU_ADAPTERS, devtools/extras.py)."""
    options = plan.options
    args: dict[str, str] = {}
    if worker.gpu is None:
        name, base = WORKER_IMAGE, options.base_image
    else:
        name, base = CUDA_WORKER_IMAGE, options.cuda_base_image
        args["ONNXRUNTIME"] = "onnxruntime-gpu"
    if worker.adapter == "kokoro":
        args["KOKORO"] = "1"
    if worker.adapter in {extra.name for extra in EXTRAS}:
        args["GPU_ADAPTERS"] = worker.adapter
    if base:
        args["BASE"] = base
    return f"{name}:{options.image_tag}{image_suffix(worker.adapter)}", dict(sorted(args.items()))


def image_suffix(adapter: str) -> str:
    """What a worker image's tag adds for the adapter: `-kokoro` (the Japanese voice),
    `-xtts` / `-cosyvoice2` (that adapter's torch stack), "" for the others."""
    if adapter == "kokoro" or adapter in {extra.name for extra in EXTRAS}:
        return f"-{adapter}"
    return ""


def server_build(plan: StackPlan) -> dict[str, Any]:
    """The orchestrator's and the console's image (one image, two commands)."""
    args = {"BASE": plan.options.base_image} if plan.options.base_image else {}
    return _build(plan, "server", args)


def _network(plan: StackPlan, service: dict[str, Any], address: str) -> dict[str, Any]:
    if plan.host_mode:
        service["network_mode"] = "host"
    else:
        service["networks"] = {NETWORK_NAME: {"ipv4_address": address}}
    return service


def _common(service: dict[str, Any]) -> dict[str, Any]:
    service["restart"] = _RESTART
    # Docker keeps each container's JSON log lines, rotated: ship them from there.
    service["logging"] = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
    return service


def _redis(plan: StackPlan) -> dict[str, Any]:
    port = str(plan.options.ports.redis)
    bind = ["--bind", "127.0.0.1"] if plan.host_mode else ["--bind", "0.0.0.0"]
    command = [
        "redis-server",
        "--port",
        port,
        *bind,
        # Only the stack's own network reaches it (nothing is published), so no password:
        # protected mode would refuse the other containers.
        "--protected-mode",
        "no",
        "--dir",
        "/data",
        # Append-only persistence: the routing strategy and drain flags survive a restart.
        "--appendonly",
        "yes",
        "--save",
        "",
        "--notify-keyspace-events",
        REDIS_KEYSPACE_EVENTS,
    ]
    service: dict[str, Any] = {
        "image": plan.options.redis_image,
        "command": Flow(command),
        "volumes": ["redis-data:/data"],
        "healthcheck": {
            "test": Flow(["CMD", "redis-cli", "-h", "127.0.0.1", "-p", port, "ping"]),
            "interval": "2s",
            "timeout": "2s",
            "retries": 15,
        },
    }
    return _common(_network(plan, service, plan.address("redis")))


def _worker(plan: StackPlan, worker: WorkerPlan) -> dict[str, Any]:
    image, args = worker_image(plan, worker)
    bind = "127.0.0.1" if plan.host_mode else "0.0.0.0"
    environment: dict[str, str] = {
        "DUPLEX_LOG_FORMAT": "json",
        # The same as its config file: the image's defaults (0.0.0.0) must not win over it.
        "DUPLEX_WORKER_HOST": bind,
        # /metrics beyond the container for Prometheus (loopback in host mode).
        "DUPLEX_WORKER_METRICS_HOST": bind,
    }
    if worker.gpu is not None:
        # The runtime exposes only the reserved GPU, as device 0 in the container: the guide's
        # CUDA_VISIBLE_DEVICES=N would hide it for any N but 0.
        environment["CUDA_VISIBLE_DEVICES"] = "0"
    volumes = [f"./config:{CONFIG_MOUNT}:ro"]
    if needs_weights(worker.adapter):
        # The operator's weights, read-only, where the worker's catalog looks for them.
        volumes.append(
            f"{plan.options.model_dir(worker.adapter)}:{container_dir(worker.adapter)}:ro"
        )
        environment[MODEL_DIR_VARIABLES[worker.adapter]] = container_dir(worker.adapter)
    service: dict[str, Any] = {
        "image": image,
        "build": _build(plan, "worker", args),
        "command": python_command(
            "duplex.worker", "--config", f"{CONFIG_MOUNT}/{worker.config_file}"
        ),
        "environment": environment,
        "volumes": volumes,
        "depends_on": {"redis": {"condition": "service_healthy"}},
        # SERVING only once its default model is loaded (grpc.health.v1).
        "healthcheck": {
            **probe("grpc", f"127.0.0.1:{worker.grpc_port}"),
            "interval": "10s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "120s",
        },
        "stop_grace_period": STOP_GRACE,
    }
    if worker.gpu is not None:
        device = {
            "driver": "nvidia",
            "device_ids": Flow([str(worker.gpu)]),
            "capabilities": Flow(["gpu"]),
        }
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return _common(_network(plan, service, worker.address))


def _server_image(plan: StackPlan) -> str:
    return f"{SERVER_IMAGE}:{plan.options.image_tag}"


def _orchestrator(plan: StackPlan) -> dict[str, Any]:
    options = plan.options
    environment: dict[str, str] = {
        "DUPLEX_LOG_FORMAT": "json",
        # The same as its config file: the image's default (0.0.0.0) must not win over it.
        "DUPLEX_ORCH_HOST": "127.0.0.1" if plan.host_mode else "0.0.0.0",
        "API_KEYS": required("API_KEYS"),
    }
    if not plan.host_mode:
        environment["WEBRTC_HOST_ADDRESSES"] = optional("WEBRTC_HOST_ADDRESSES")
        environment["WEBRTC_ICE_SERVERS"] = optional("WEBRTC_ICE_SERVERS")
    volumes = [f"./config:{CONFIG_MOUNT}:ro"]
    if options.tls:
        volumes.append(f"{options.tls_cert_dir or './tls'}:{TLS_MOUNT}:ro")
    service: dict[str, Any] = {
        "image": _server_image(plan),
        "build": server_build(plan),
        "command": python_command(
            "duplex.orchestrator", "--config", f"{CONFIG_MOUNT}/orchestrator.yaml"
        ),
        "environment": environment,
        "volumes": volumes,
        "depends_on": {"redis": {"condition": "service_healthy"}},
        "healthcheck": {
            **probe("http", f"127.0.0.1:{options.ports.orchestrator}", "/ready"),
            "interval": "5s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "30s",
        },
    }
    if plan.orchestrator_on_host:
        service["network_mode"] = "host"
        if not plan.host_mode:
            # Docker's DNS does not answer on the host network: Redis by its fixed address
            # (the workers announce theirs).
            service["extra_hosts"] = [f"redis:{plan.address('redis')}"]
    else:
        ports = [f"{options.ports.orchestrator}:{options.ports.orchestrator}"]
        if options.tls:
            ports.append(f"{options.ports.tls}:{options.ports.tls}")
        service["ports"] = ports
        _network(plan, service, plan.address("orchestrator"))
    return _common(service)


def _console(plan: StackPlan) -> dict[str, Any]:
    port = plan.options.ports.console
    service: dict[str, Any] = {
        "image": _server_image(plan),
        "build": server_build(plan),
        "command": python_command("duplex.console", "--config", f"{CONFIG_MOUNT}/console.yaml"),
        "environment": {
            "DUPLEX_LOG_FORMAT": "json",
            "CONSOLE_HOST": "127.0.0.1" if plan.host_mode else "0.0.0.0",
            # Required off loopback: the console refuses to start without it.
            "CONSOLE_ADMIN_TOKEN": required("CONSOLE_ADMIN_TOKEN"),
            # Fixed, so that sign-ins survive a restart of the console.
            "CONSOLE_SESSION_SECRET": required("CONSOLE_SESSION_SECRET"),
        },
        "volumes": [f"./config:{CONFIG_MOUNT}:ro"],
        "depends_on": {"redis": {"condition": "service_healthy"}},
        "healthcheck": {
            **probe("http", f"127.0.0.1:{port}", "/health"),
            "interval": "5s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "20s",
        },
    }
    if not plan.host_mode:
        service["ports"] = [f"{port}:{port}"]
    return _common(_network(plan, service, plan.address("console")))


def _prometheus(plan: StackPlan) -> dict[str, Any]:
    port = plan.options.ports.prometheus
    listen = f"127.0.0.1:{port}" if plan.host_mode else f"0.0.0.0:{port}"
    service: dict[str, Any] = {
        "image": PROMETHEUS_IMAGE,
        "profiles": Flow([MONITORING_PROFILE]),
        "command": [
            f"--config.file={PROMETHEUS_MOUNT}/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--web.listen-address={listen}",
        ],
        "volumes": [f"./prometheus:{PROMETHEUS_MOUNT}:ro", "prometheus-data:/prometheus"],
        "depends_on": ["orchestrator"],
    }
    if not plan.host_mode:
        # No authentication in Prometheus: published on the host's loopback only.
        service["ports"] = [f"127.0.0.1:{port}:{port}"]
        if plan.orchestrator_on_host:
            service["extra_hosts"] = [f"orchestrator:{plan.gateway}"]
    return _common(_network(plan, service, plan.address("prometheus")))


def _grafana(plan: StackPlan) -> dict[str, Any]:
    port = plan.options.ports.grafana
    environment = {
        "GF_SECURITY_ADMIN_PASSWORD": required("GRAFANA_ADMIN_PASSWORD"),
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_SERVER_HTTP_PORT": str(port),
    }
    if plan.host_mode:
        environment["GF_SERVER_HTTP_ADDR"] = "127.0.0.1"
    repository = plan.options.repository
    service: dict[str, Any] = {
        "image": GRAFANA_IMAGE,
        "profiles": Flow([MONITORING_PROFILE]),
        "environment": environment,
        "volumes": [
            # The dashboards and their provider from grafana/; the data source is generated
            # (its URL is this stack's Prometheus).
            f"{repository}/grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards:ro",
            "./grafana/datasources:/etc/grafana/provisioning/datasources:ro",
            f"{repository}/grafana/dashboards:/var/lib/grafana/dashboards:ro",
        ],
        "depends_on": ["prometheus"],
    }
    if not plan.host_mode:
        service["ports"] = [f"{port}:{port}"]
    return _common(_network(plan, service, plan.address("grafana")))
