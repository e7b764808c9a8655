"""From the options to the stack: every worker's service name, worker name, ports and address.

Names follow the deployment guide: the worker on GPU N is `tts-<adapter>@N` (its Redis key is
`worker:tts-<adapter>@N`), and its compose service is `tts-<adapter>-N` (`@` is not allowed in a
service name). A second worker of the same adapter on the same GPU gets `-2`; CPU workers are
`tts-<adapter>@cpuK`. Ports are numbered from the bases in worker order, so every worker has
its own gRPC and /metrics port in either network mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from duplex.deploy.spec import DeployError, Network, StackOptions, WorkerSpec
from duplex.deploy.weights import MODEL_DIR_VARIABLES, needs_weights

# Fixed addresses on the bridge network's /24 (see compose.py for why they are fixed).
GATEWAY_HOST = 1
SERVICE_HOSTS: Mapping[str, int] = MappingProxyType(
    {"redis": 2, "orchestrator": 3, "console": 4, "prometheus": 5, "grafana": 6}
)
FIRST_WORKER_HOST = 10
MAX_WORKERS = 254 - FIRST_WORKER_HOST


@dataclass(frozen=True)
class WorkerPlan:
    """One worker container: who it is, where it listens, what it runs on."""

    service: str  # compose service name: tts-piper-0
    name: str  # worker name in Redis and in the metrics: tts-piper@0
    adapter: str
    model_id: str
    gpu: int | None  # the host's GPU index reserved for it; None: CPU
    grpc_port: int
    metrics_port: int
    address: str  # the bridge network's fixed address ("" in host mode)

    @property
    def config_file(self) -> str:
        """Its config file's name under the generated config/ folder."""
        return f"{self.service}.yaml"


@dataclass(frozen=True)
class StackPlan:
    """The options and the workers they give."""

    options: StackOptions
    workers: tuple[WorkerPlan, ...]

    @property
    def host_mode(self) -> bool:
        return self.options.network is Network.HOST

    @property
    def orchestrator_on_host(self) -> bool:
        """The orchestrator uses the host's network: always in host mode, and for WebRTC."""
        return self.host_mode or self.options.webrtc

    def address(self, service: str) -> str:
        """The fixed bridge address of redis, orchestrator, console, prometheus or grafana."""
        return f"{self.options.subnet_prefix}.{SERVICE_HOSTS[service]}"

    @property
    def gateway(self) -> str:
        """The host, as seen from the bridge network."""
        return f"{self.options.subnet_prefix}.{GATEWAY_HOST}"

    def reach(self, service: str) -> str:
        """The host name another process uses to reach `service` (127.0.0.1 in host mode)."""
        return "127.0.0.1" if self.host_mode else service


def plan_stack(options: StackOptions, models: Mapping[str, Sequence[str]]) -> StackPlan:
    """Name and number every worker. `models`: adapter -> its model ids (catalog order)."""
    if len(options.workers) > MAX_WORKERS:
        raise DeployError(f"{len(options.workers)} workers: at most {MAX_WORKERS} per stack")
    seen: dict[tuple[str, str], int] = {}
    cpu_index = 0
    plans: list[WorkerPlan] = []
    for index, spec in enumerate(options.workers):
        if needs_weights(spec.adapter) and not options.model_dir(spec.adapter):
            variable = MODEL_DIR_VARIABLES[spec.adapter]
            raise DeployError(f"a {spec.adapter} worker needs its weights: give {variable}")
        if spec.gpu is None:
            slot = f"cpu{cpu_index}"
            cpu_index += 1
        else:
            slot = str(spec.gpu)
        count = seen.get((spec.adapter, slot), 0) + 1
        seen[(spec.adapter, slot)] = count
        suffix = "" if count == 1 else f"-{count}"
        plans.append(
            WorkerPlan(
                service=f"tts-{spec.adapter}-{slot}{suffix}",
                name=f"tts-{spec.adapter}@{slot}{suffix}",
                adapter=spec.adapter,
                model_id=_model_id(spec, models),
                gpu=spec.gpu,
                grpc_port=options.ports.grpc_base + index,
                metrics_port=options.ports.metrics_base + index,
                address=""
                if options.network is Network.HOST
                else f"{options.subnet_prefix}.{FIRST_WORKER_HOST + index}",
            )
        )
    plan = StackPlan(options=options, workers=tuple(plans))
    _check_ports(plan)
    return plan


def _model_id(spec: WorkerSpec, models: Mapping[str, Sequence[str]]) -> str:
    known = tuple(models.get(spec.adapter, ()))
    if not known:
        raise DeployError(f"adapter {spec.adapter!r} has no model in this build's catalog")
    if spec.model_id is None:
        return known[0]
    if spec.model_id not in known:
        raise DeployError(
            f"MODELS: model {spec.model_id!r} is not one of {spec.adapter}'s: {', '.join(known)}"
        )
    return spec.model_id


def _check_ports(plan: StackPlan) -> None:
    """Every port distinct: in host mode they share one network, and distinct ports keep the
    bridge file's scrape targets and published ports unambiguous too."""
    ports = plan.options.ports
    used: dict[int, str] = {}

    def take(port: int, what: str) -> None:
        if not 1 <= port <= 65535:
            raise DeployError(f"{what}: port {port} is not in 1..65535")
        if port in used:
            raise DeployError(f"{what} and {used[port]} would both use port {port}")
        used[port] = what

    take(ports.redis, "redis")
    take(ports.orchestrator, "the orchestrator")
    if plan.options.tls:
        take(ports.tls, "the orchestrator's TLS port")
    take(ports.console, "the console")
    if plan.options.monitoring:
        take(ports.prometheus, "prometheus")
        take(ports.grafana, "grafana")
    for worker in plan.workers:
        take(worker.grpc_port, f"{worker.service} (gRPC)")
        take(worker.metrics_port, f"{worker.service} (/metrics)")
