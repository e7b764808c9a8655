"""The YAML config files the generated stack mounts read-only at /etc/duplex in its containers.

Each process gets a complete file of its own rather than the shared files of config/ plus
environment overrides: a worker's identity (name, ports, advertised address) is then in one
place, and tests can check that a worker's file and its compose service agree.
"""

from __future__ import annotations

from typing import Any

from duplex.deploy.plan import StackPlan, WorkerPlan

CONFIG_MOUNT = "/etc/duplex"
"""Where the generated config/ folder is mounted in every duplex container."""

TLS_MOUNT = "/etc/duplex-tls"
"""Where the certificate folder is mounted in the orchestrator (outside CONFIG_MOUNT: a mount
inside a read-only mount would need a folder created in it)."""

REDIS_DB = 0


def redis_url(plan: StackPlan) -> str:
    """The Redis every process uses: the `redis` service, or 127.0.0.1 in host mode."""
    return f"redis://{plan.reach('redis')}:{plan.options.ports.redis}/{REDIS_DB}"


def advertise_host(plan: StackPlan, worker: WorkerPlan) -> str:
    """The host in the worker's announced grpc://host:port, which the orchestrator (and the
    console) dial: 127.0.0.1 in host mode; the service name when the orchestrator shares the
    compose network; the worker's fixed address when the orchestrator is on the host network
    (Docker's DNS does not answer there, and an address needs no extra_hosts entry, so adding
    a worker does not recreate the orchestrator)."""
    if plan.host_mode:
        return "127.0.0.1"
    return worker.address if plan.orchestrator_on_host else worker.service


def worker_config(plan: StackPlan, worker: WorkerPlan) -> dict[str, Any]:
    """One worker: its identity, its ports, and an address the orchestrator can dial."""
    bind = "127.0.0.1" if plan.host_mode else "0.0.0.0"
    return {
        "worker": {
            "name": worker.name,
            "grpc_port": worker.grpc_port,
            "adapter_type": worker.adapter,
            "host": bind,
            "advertise_host": advertise_host(plan, worker),
            "metrics_port": worker.metrics_port,
            "metrics_host": bind,
            "use_cuda": worker.gpu is not None,
        },
        "model_manager": {
            "default_model_id": worker.model_id,
            "preload_model_ids": [worker.model_id],
            "resident_cap": 2,
        },
        "redis": {"url": redis_url(plan), "heartbeat_interval_ms": 5000, "worker_ttl_ms": 15000},
        "audio": {"sample_rate": 48000, "frame_duration_ms": 20},
    }


def orchestrator_config(plan: StackPlan) -> dict[str, Any]:
    """The orchestrator: every interface in bridge mode (clients come from the network; API
    keys are then required), loopback in host mode."""
    options = plan.options
    config: dict[str, Any] = {
        "transport": {
            "websocket": {
                "host": "127.0.0.1" if plan.host_mode else "0.0.0.0",
                "port": options.ports.orchestrator,
            },
            "webrtc": {
                "enabled": options.webrtc,
                # Host mode keeps every ICE candidate on loopback; otherwise every interface
                # (WEBRTC_HOST_ADDRESSES in .env narrows it).
                "host_addresses": ["127.0.0.1"] if plan.host_mode else [],
            },
        },
        "routing": {"load_balancing_strategy": "least_loaded", "prefer_resident_models": True},
        "redis": {"url": redis_url(plan), "worker_ttl_ms": 15000},
    }
    if options.tls:
        config["tls"] = {
            "port": options.ports.tls,
            "cert_file": f"{TLS_MOUNT}/cert.pem",
            "key_file": f"{TLS_MOUNT}/key.pem",
        }
    return config


def console_config(plan: StackPlan) -> dict[str, Any]:
    """The console: links for browsers use PUBLIC_HOST; the admin token comes from .env."""
    options = plan.options
    public = options.public_host
    scheme, port = (
        ("https", options.ports.tls) if options.tls else ("http", options.ports.orchestrator)
    )
    return {
        "console": {
            "host": "127.0.0.1" if plan.host_mode else "0.0.0.0",
            "port": options.ports.console,
            "demo_url": f"{scheme}://{public}:{port}/",
            "grafana_url": f"http://{public}:{options.ports.grafana}/",
        },
        "redis": {"url": redis_url(plan), "worker_ttl_ms": 15000},
    }


def config_files(plan: StackPlan) -> dict[str, dict[str, Any]]:
    """File name (under config/) -> its content, in a stable order."""
    files: dict[str, dict[str, Any]] = {
        "orchestrator.yaml": orchestrator_config(plan),
        "console.yaml": console_config(plan),
    }
    for worker in plan.workers:
        files[worker.config_file] = worker_config(plan, worker)
    return files
