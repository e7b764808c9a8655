"""`python -m duplex.deploy`: generate the compose stack (`make up`, `make config`) or the
systemd units (`make systemd`) for this host.

    python -m duplex.deploy generate --gpus 2 --out compose/generated --env-file .env
    python -m duplex.deploy config --gpus 0,2 --models 0:piper,2:kokoro   # print, write nothing
    python -m duplex.deploy systemd --gpus 2 --out compose/generated/systemd
    python -m duplex.deploy k8s --gpus-per-node 4 --nodes 2 --pools piper:6,kokoro:2 --out k8s

Every input is checked before anything is written: a bad one exits 2 with a line naming the
variable and the value.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from duplex.deploy.k8s import SECRET, render_k8s, write_k8s
from duplex.deploy.k8s_spec import K8sOptions, parse_pools, parse_positive
from duplex.deploy.plan import StackPlan, plan_stack
from duplex.deploy.render import COMPOSE_FILE, ROOT, render, write
from duplex.deploy.secrets import ensure_secrets, needed
from duplex.deploy.spec import (
    DeployError,
    Network,
    Ports,
    StackOptions,
    detect_gpus,
    parse_count,
    parse_flag,
    parse_gpus,
    parse_models,
    parse_network,
    plan_workers,
)
from duplex.deploy.systemd import SystemdOptions, render_systemd
from duplex.deploy.weights import (
    MODEL_DIR_VARIABLES,
    check_model_dirs,
    claim_variable,
    parse_claims,
)
from duplex.deploy.workers_stack import render_workers
from duplex.registry._connect import redacted

DEFAULT_OUT = Path("compose/generated")
PORT_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "redis": "REDIS_PORT",
        "orchestrator": "ORCH_PORT",
        "tls": "TLS_PORT",
        "console": "CONSOLE_PORT",
        "grpc_base": "GRPC_BASE_PORT",
        "metrics_base": "METRICS_BASE_PORT",
        "prometheus": "PROMETHEUS_PORT",
        "grafana": "GRAFANA_PORT",
    }
)
"""Ports field -> the make variable (and flag: --redis-port, ...) that sets it."""


@dataclass(frozen=True)
class Catalog:
    """What this build of the worker can run: adapter -> its model ids."""

    models: Mapping[str, tuple[str, ...]]


def builtin() -> Catalog:
    """The worker's adapter registry and model catalog."""
    from duplex.worker.adapters import adapter_families
    from duplex.worker.catalog import builtin_catalog

    catalog = builtin_catalog()
    return Catalog(
        {a: tuple(s.model_id for s in catalog.for_family(a)) for a in adapter_families()}
    )


def _flag(name: str) -> str:
    return "--" + name.lower().replace("_", "-")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m duplex.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write the stack into --out")
    config = commands.add_parser("config", help="print the compose file; write nothing")
    systemd = commands.add_parser("systemd", help="write systemd units and configs into --out")
    workers = commands.add_parser("workers", help="write a workers-only stack (another host)")
    for sub in (generate, config, systemd, workers):
        sub.add_argument("--gpus", default="auto", help="a count, a list (0,2) or auto")
        sub.add_argument(
            "--models", default="", help="GPU:ADAPTER[+ADAPTER],... e.g. 0:piper,1:kokoro"
        )
        sub.add_argument(
            "--cpu-workers", default="", help="CPU Piper workers (default 2 with GPUS=0)"
        )
        sub.add_argument("--monitoring", default="1", help="1: Prometheus and Grafana")
        sub.add_argument("--tls", default="0", help="1: HTTPS/WSS on the TLS port")
        sub.add_argument("--tls-cert-dir", default="", help="folder with cert.pem and key.pem")
        sub.add_argument("--network", default="bridge", help="bridge (production) or host")
        sub.add_argument(
            "--webrtc", default="1", help="1: WebRTC (orchestrator on the host network)"
        )
        sub.add_argument("--image-tag", default="latest")
        sub.add_argument("--redis-image", default="redis:7-alpine")
        sub.add_argument("--base-image", default="", help="the Dockerfile's BASE")
        sub.add_argument("--cuda-base-image", default="", help="BASE of the CUDA worker image")
        sub.add_argument("--public-host", default="localhost", help="the name browsers use")
        sub.add_argument(
            "--subnet", default="10.231.77", help="the bridge network's /24, e.g. 10.231.77"
        )
        for variable in PORT_VARIABLES.values():
            sub.add_argument(_flag(variable), default="")
        for adapter, variable in MODEL_DIR_VARIABLES.items():
            sub.add_argument(
                _flag(variable), default="", help=f"host folder with the {adapter} weights"
            )
    workers.add_argument("--redis-url", default="", help="the first host's Redis")
    workers.add_argument("--advertise-host", default="", help="default: the route to Redis")
    workers.add_argument("--worker-cert-dir", default="", help="ca.pem, worker-N.pem/.key")
    workers.add_argument("--host-name", default="", help="prefix of worker names (hostname)")
    for sub, default in (
        (workers, Path("compose/workers")),
        (generate, DEFAULT_OUT),
        (config, DEFAULT_OUT),
        (systemd, DEFAULT_OUT / "systemd"),
    ):
        sub.add_argument("--out", type=Path, default=default, help=f"default {default}")
    generate.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="make sure the stack's secrets are in this file (make up: .env)",
    )
    k8s = commands.add_parser("k8s", help="write Kubernetes manifests into --out")
    k8s.add_argument("--gpus-per-node", required=True)
    k8s.add_argument("--nodes", default="1")
    k8s.add_argument("--pools", default="piper", help="adapter[:GPUs],... e.g. piper:6,kokoro:2")
    k8s.add_argument("--orchestrators", default="2")
    k8s.add_argument("--namespace", default="duplex")
    k8s.add_argument("--image-tag", default="latest")
    k8s.add_argument("--image-prefix", default="", help="a registry path, e.g. registry.lan/")
    k8s.add_argument("--redis-url", default="", help="an external Redis (default: in-cluster)")
    k8s.add_argument("--redis-image", default="redis:7-alpine")
    k8s.add_argument("--webrtc", default="0", help="1: orchestrators on the nodes' network")
    for adapter in MODEL_DIR_VARIABLES:
        k8s.add_argument(
            _flag(claim_variable(adapter)),
            default="",
            help=f"PersistentVolumeClaim[/folder] with the {adapter} weights",
        )
    k8s.add_argument("--out", type=Path, default=Path("k8s"))
    systemd.add_argument("--install-dir", default="/opt/duplex")
    systemd.add_argument("--config-dir", default="/etc/duplex")
    systemd.add_argument("--user", default="duplex")
    return parser


def repository_from(out: Path) -> str:
    """The repository as a path relative to the stack folder `out` (relative paths in a
    compose file are resolved from the file's folder)."""
    return os.path.relpath(ROOT, out.resolve())


def options_from(args: argparse.Namespace, catalog: Catalog) -> StackOptions:
    """Parse and check every input; raises DeployError naming the first bad one."""

    def detect() -> tuple[int, ...]:
        gpus, message = detect_gpus()
        print(message, file=sys.stderr)
        return gpus

    gpus = parse_gpus(args.gpus, detect)
    models = parse_models(args.models, gpus, tuple(catalog.models))
    workers = plan_workers(gpus, models, parse_count("CPU_WORKERS", args.cpu_workers))
    model_dirs = check_model_dirs(
        {v: getattr(args, v.lower()) for v in MODEL_DIR_VARIABLES.values()},
        (w.adapter for w in workers),
        args.models,
    )
    ports: dict[str, int] = {}
    for field_name, variable in PORT_VARIABLES.items():
        value = parse_count(variable, getattr(args, variable.lower()))
        if value is not None:
            ports[field_name] = value
    return StackOptions(
        workers=workers,
        monitoring=parse_flag("MONITORING", args.monitoring),
        tls=parse_flag("TLS", args.tls),
        tls_cert_dir=args.tls_cert_dir,
        network=parse_network(args.network),
        webrtc=parse_flag("WEBRTC", args.webrtc),
        image_tag=args.image_tag,
        redis_image=args.redis_image,
        base_image=args.base_image,
        cuda_base_image=args.cuda_base_image,
        public_host=args.public_host,
        subnet_prefix=args.subnet.removesuffix(".0/24"),
        ports=Ports(**ports),
        model_dirs=model_dirs,
        repository=repository_from(args.out),
    )


def plan_from_args(argv: Sequence[str], catalog: Catalog | None = None) -> StackPlan:
    """The plan `python -m duplex.deploy config ARGV...` would render (tests, tools)."""
    known = catalog or builtin()
    args = _parser().parse_args(["config", *argv])
    return plan_stack(options_from(args, known), known.models)


def _generate(plan: StackPlan, out: Path, env_file: Path | None) -> None:
    files = render(plan)
    changed = write(files, out)
    print(
        f"wrote {out}/ ({len(files)} files, {len(changed)} changed): "
        f"{', '.join(w.name for w in plan.workers)}"
    )
    if env_file is not None:
        new = ensure_secrets(env_file, needed(plan))
        if new:
            print(f"\nNew secrets, saved in {env_file} (shown this once):")
            for name, value in new.items():
                print(f"  {name}={value}")
            print()
    if plan.options.tls and not plan.options.tls_cert_dir:
        from duplex.deploy.tlsdir import ensure_certificate

        print(ensure_certificate(out / "tls", plan.options.public_host))


def k8s_options_from(args: argparse.Namespace, catalog: Catalog) -> K8sOptions:
    """Parse and check the `k8s` inputs; raises DeployError naming the first bad one."""
    per_node = parse_positive("GPUS_PER_NODE", args.gpus_per_node)
    nodes = parse_positive("NODES", args.nodes, default=1)
    pools = parse_pools(args.pools, per_node * nodes, catalog.models)
    claims = {
        claim_variable(a): getattr(args, claim_variable(a).lower()) for a in MODEL_DIR_VARIABLES
    }
    return K8sOptions(
        gpus_per_node=per_node,
        nodes=nodes,
        pools=pools,
        model_claims=parse_claims(claims, (p.adapter for p in pools), args.pools),
        orchestrators=parse_positive("ORCHESTRATORS", args.orchestrators, default=2),
        namespace=args.namespace,
        image_tag=args.image_tag,
        image_prefix=args.image_prefix,
        redis_url=args.redis_url,
        redis_image=args.redis_image,
        webrtc=parse_flag("WEBRTC", args.webrtc),
    )


def k8s_inputs(options: K8sOptions) -> str:
    """The canonical inputs line at the head of every manifest."""
    pools = ",".join(f"{p.adapter}:{p.replicas}" for p in options.pools)
    return (
        f"GPUS_PER_NODE={options.gpus_per_node} NODES={options.nodes} POOLS={pools} "
        f"ORCHESTRATORS={options.orchestrators} NAMESPACE={options.namespace} "
        f"IMAGE_TAG={options.image_tag} WEBRTC={int(options.webrtc)}"
        + (" REDIS_URL=external" if options.redis_url else "")
        + "".join(
            f" {claim_variable(c.adapter)}={c.claim}{'/' if c.sub_path else ''}{c.sub_path}"
            for c in options.model_claims
        )
    )


def _k8s(args: argparse.Namespace, catalog: Catalog) -> None:
    options = k8s_options_from(args, catalog)
    files = render_k8s(options, k8s_inputs(options))
    changed = write_k8s(files, args.out)
    print(f"wrote {args.out}/ ({len(files)} files, {len(changed)} changed)")
    print(f"then: kubectl apply -k {args.out} (the {SECRET} Secret first: docs/multi-host.md)")


def _workers(args: argparse.Namespace, catalog: Catalog) -> None:
    # The workers use the host's network: orchestrators on other hosts dial them directly.
    options = replace(
        options_from(args, catalog), network=Network.HOST, monitoring=False, webrtc=False
    )
    plan = plan_stack(options, catalog.models)
    host_name = args.host_name or socket.gethostname().split(".")[0]
    files = render_workers(
        plan, args.redis_url, args.advertise_host, host_name, args.worker_cert_dir
    )
    changed = write(files, args.out)
    print(
        f"wrote {args.out}/ ({len(files)} files, {len(changed)} changed): "
        f"{', '.join(w.name for w in plan.workers)} joining {redacted(args.redis_url)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "k8s":
            _k8s(args, builtin())
            return 0
        if args.command == "workers":
            _workers(args, builtin())
            return 0
        catalog = builtin()
        plan = plan_stack(options_from(args, catalog), catalog.models)
        if args.command == "config":
            sys.stdout.write(render(plan)[COMPOSE_FILE])
        elif args.command == "generate":
            _generate(plan, args.out, args.env_file)
        else:
            files = render_systemd(
                plan, SystemdOptions(args.install_dir, args.config_dir, args.user)
            )
            write(files, args.out)
            print(f"wrote {args.out}/: {', '.join(files)} (see docs/deployment.md, systemd)")
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
