"""Kubernetes manifests for a fleet (`make k8s GPUS_PER_NODE=.. NODES=..`): one worker
Deployment per GPU pool (one GPU per pod), the orchestrators and the console as Deployments
with probes on their real endpoints, Redis as a StatefulSet (or an external URL), a Service per
part, and a PodDisruptionBudget per worker pool. Plain YAML with a `kustomization.yaml`
(`kubectl apply -k DIR`); the same options give the same bytes.

Secrets are not generated: the pods read `duplex-secrets` (API_KEYS, CONSOLE_ADMIN_TOKEN,
CONSOLE_SESSION_SECRET, and optionally REDIS_URL and WORKER_TOKEN), which the operator creates
(docs/multi-host.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from duplex.deploy.compose import REDIS_KEYSPACE_EVENTS, SERVER_IMAGE, image_suffix, python_command
from duplex.deploy.k8s_spec import K8S_VERSION, K8sOptions, PoolSpec
from duplex.deploy.weights import MODEL_DIR_VARIABLES, container_dir
from duplex.deploy.yamltext import Flow, dump_yaml
from duplex.worker.health import SERVICE_NAME as WORKER_HEALTH_SERVICE

CUDA_WORKER_IMAGE = "duplex-worker-cuda"
SECRET = "duplex-secrets"
CONFIG_DIR = "/etc/duplex"
GRPC_PORT = 50051
WORKER_METRICS_PORT = 9101
ORCH_PORT = 8080
CONSOLE_PORT = 8000
REDIS_PORT = 6379
WORKER_GRACE_S = 30  # the worker drains for drain_grace_s (10 s) before it exits
APP = "duplex"


def _labels(component: str, **more: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component, **more}


def _meta(options: K8sOptions, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": options.namespace, "labels": dict(labels)}


def redis_url(options: K8sOptions) -> str:
    return options.redis_url or f"redis://redis.{options.namespace}.svc:{REDIS_PORT}/0"


def _secret_env(name: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": SECRET, "key": name}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _config_volume(config_map: str) -> dict[str, Any]:
    return {"name": "config", "configMap": {"name": config_map}}


_CONFIG_MOUNT = {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}


def _http_probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


# -- config files (the same keys as config/*.yaml; identity comes from the pod) -------------


def worker_config(options: K8sOptions, pool: PoolSpec) -> dict[str, Any]:
    return {
        "worker": {
            # Replaced per pod: DUPLEX_WORKER_NAME (the pod name), DUPLEX_WORKER_ADVERTISE_HOST
            # (the pod IP).
            "name": pool.name,
            "grpc_port": GRPC_PORT,
            "adapter_type": pool.adapter,
            "host": "0.0.0.0",
            "advertise_host": "auto",
            "metrics_port": WORKER_METRICS_PORT,
            "metrics_host": "0.0.0.0",
            "use_cuda": True,
        },
        "model_manager": {
            "default_model_id": pool.model_id,
            "preload_model_ids": [pool.model_id],
            "resident_cap": 2,
        },
        "redis": {"url": redis_url(options), "heartbeat_interval_ms": 5000, "worker_ttl_ms": 15000},
        "audio": {"sample_rate": 48000, "frame_duration_ms": 20},
    }


def orchestrator_config(options: K8sOptions) -> dict[str, Any]:
    return {
        "transport": {
            "websocket": {"host": "0.0.0.0", "port": ORCH_PORT},
            "webrtc": {"enabled": options.webrtc},
        },
        "routing": {"load_balancing_strategy": "least_loaded", "prefer_resident_models": True},
        "redis": {"url": redis_url(options), "worker_ttl_ms": 15000},
    }


def console_config(options: K8sOptions) -> dict[str, Any]:
    return {
        "console": {"host": "0.0.0.0", "port": CONSOLE_PORT},
        "redis": {"url": redis_url(options), "worker_ttl_ms": 15000},
    }


def _config_map(options: K8sOptions, name: str, component: str, files: dict[str, Any]) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(options, name, _labels(component)),
        "data": {file: dump_yaml(content) for file, content in files.items()},
    }


# -- workloads ----------------------------------------------------------------------------


def _worker_documents(options: K8sOptions, pool: PoolSpec) -> list[dict[str, Any]]:
    labels = _labels("worker", **{"duplex/pool": pool.adapter})
    image = f"{options.image_prefix}{CUDA_WORKER_IMAGE}:{options.image_tag}"
    image += image_suffix(pool.adapter)
    container: dict[str, Any] = {
        "name": "worker",
        "image": image,
        "command": python_command("duplex.worker", "--config", f"{CONFIG_DIR}/worker.yaml"),
        "env": [
            {"name": "DUPLEX_LOG_FORMAT", "value": "json"},
            _field_env("DUPLEX_WORKER_NAME", "metadata.name"),
            # The pod's own address: what orchestrators on any node dial.
            _field_env("DUPLEX_WORKER_ADVERTISE_HOST", "status.podIP"),
            _secret_env("REDIS_URL", optional=True),
            _secret_env("DUPLEX_WORKER_TOKEN", optional=True),
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "metrics", "containerPort": WORKER_METRICS_PORT},
        ],
        # The device plugin gives the pod exactly this one GPU (as device 0).
        "resources": {"limits": {"nvidia.com/gpu": 1}},
        # SERVING once the default model is loaded (grpc.health.v1): loading may take minutes.
        "startupProbe": {
            "grpc": {"port": GRPC_PORT, "service": WORKER_HEALTH_SERVICE},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        # NOT_SERVING while draining: out of the Service, not restarted.
        "readinessProbe": {
            "grpc": {"port": GRPC_PORT, "service": WORKER_HEALTH_SERVICE},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "tcpSocket": {"port": GRPC_PORT},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "volumeMounts": [dict(_CONFIG_MOUNT)],
    }
    volumes = [_config_volume(f"{pool.name}-config")]
    claim = options.claim(pool.adapter)
    if claim is not None:
        # The operator's weights from their claim, read-only, where the worker's catalog looks.
        mount = {"name": claim.volume, "mountPath": container_dir(pool.adapter), "readOnly": True}
        if claim.sub_path:
            mount["subPath"] = claim.sub_path
        container["volumeMounts"].append(mount)
        container["env"].append(
            {"name": MODEL_DIR_VARIABLES[pool.adapter], "value": container_dir(pool.adapter)}
        )
        volumes.append(
            {
                "name": claim.volume,
                "persistentVolumeClaim": {"claimName": claim.claim, "readOnly": True},
            }
        )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(options, pool.name, labels),
        "spec": {
            "replicas": pool.replicas,
            "selector": {"matchLabels": labels},
            # One GPU each: a rolling update may not ask for GPUs the nodes do not have.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0,
                                                                    "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": WORKER_GRACE_S,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }  # fmt: skip
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(options, pool.name, labels),
        # Headless: orchestrators dial each pod's announced address; this names them for
        # Prometheus and operators.
        "spec": {
            "clusterIP": "None",
            "selector": labels,
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
                {"name": "metrics", "port": WORKER_METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(options, pool.name, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
    }
    config = _config_map(
        options, f"{pool.name}-config", "worker", {"worker.yaml": worker_config(options, pool)}
    )
    return [config, deployment, service, budget]


def _server_container(name: str, module: str, port: int, env: list[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "image": "",  # set by the caller
        "command": python_command(module, "--config", f"{CONFIG_DIR}/{name}.yaml"),
        "env": [{"name": "DUPLEX_LOG_FORMAT", "value": "json"}, *env],
        "ports": [{"name": "http", "containerPort": port}],
        "volumeMounts": [_CONFIG_MOUNT],
    }


def _deployment(
    options: K8sOptions, name: str, replicas: int, container: dict[str, Any], **pod: Any
) -> dict[str, Any]:
    labels = _labels(name)
    container["image"] = f"{options.image_prefix}{SERVER_IMAGE}:{options.image_tag}"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(options, name, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **pod,
                    "containers": [container],
                    "volumes": [_config_volume(f"{name}-config")],
                },
            },
        },
    }


def _service(options: K8sOptions, name: str, port: int, **spec: Any) -> dict[str, Any]:
    labels = _labels(name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(options, name, labels),
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
            **spec,
        },
    }


def _orchestrator_documents(options: K8sOptions) -> list[dict[str, Any]]:
    container = _server_container(
        "orchestrator",
        "duplex.orchestrator",
        ORCH_PORT,
        [
            _secret_env("API_KEYS"),
            _secret_env("REDIS_URL", optional=True),
            _secret_env("DUPLEX_WORKER_TOKEN", optional=True),
        ],
    )
    container["readinessProbe"] = _http_probe("/ready", ORCH_PORT, 5, 2)
    container["livenessProbe"] = _http_probe("/health", ORCH_PORT, 10, 3)
    pod: dict[str, Any] = {"terminationGracePeriodSeconds": 30}
    if options.webrtc:
        # WebRTC media flows to the node's own addresses: one orchestrator per node.
        pod["hostNetwork"] = True
        pod["dnsPolicy"] = "ClusterFirstWithHostNet"
        pod["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": _labels("orchestrator")},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    return [
        _config_map(
            options,
            "orchestrator-config",
            "orchestrator",
            {"orchestrator.yaml": orchestrator_config(options)},
        ),
        _deployment(options, "orchestrator", options.orchestrators, container, **pod),
        # ClientIP affinity keeps a WebRTC peer's offer and hang-up on one orchestrator;
        # WebSocket sessions live on their connection and need none (docs/multi-host.md).
        _service(options, "orchestrator", ORCH_PORT, sessionAffinity="ClientIP"),
    ]


def _console_documents(options: K8sOptions) -> list[dict[str, Any]]:
    container = _server_container(
        "console",
        "duplex.console",
        CONSOLE_PORT,
        [
            _secret_env("CONSOLE_ADMIN_TOKEN"),
            _secret_env("CONSOLE_SESSION_SECRET"),
            _secret_env("REDIS_URL", optional=True),
            _secret_env("DUPLEX_WORKER_TOKEN", optional=True),
        ],
    )
    container["readinessProbe"] = _http_probe("/health", CONSOLE_PORT, 5, 2)
    container["livenessProbe"] = _http_probe("/health", CONSOLE_PORT, 10, 3)
    return [
        _config_map(
            options, "console-config", "console", {"console.yaml": console_config(options)}
        ),
        _deployment(options, "console", 1, container),
        _service(options, "console", CONSOLE_PORT),
    ]


def _redis_documents(options: K8sOptions) -> list[dict[str, Any]]:
    labels = _labels("redis")
    port = str(REDIS_PORT)
    command = ["redis-server", "--port", port, "--protected-mode", "no", "--dir", "/data",
               "--appendonly", "yes", "--save", "",
               "--notify-keyspace-events", REDIS_KEYSPACE_EVENTS]  # fmt: skip
    container = {
        "name": "redis",
        "image": options.redis_image,
        "command": Flow(command),
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "readinessProbe": {
            "exec": {"command": Flow(["redis-cli", "-p", port, "ping"])},
            "periodSeconds": 5,
        },
        "livenessProbe": {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 10},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(options, "redis", labels),
            "spec": {
                "selector": labels,
                "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(options, "redis", labels),
            "spec": {
                "serviceName": "redis",
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    ]


def manifests(options: K8sOptions) -> dict[str, list[dict[str, Any]]]:
    """File name -> its documents, in a stable order."""
    files: dict[str, list[dict[str, Any]]] = {
        "namespace.yaml": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": options.namespace}}
        ]
    }
    if not options.redis_url:
        files["redis.yaml"] = _redis_documents(options)
    for pool in options.pools:
        files[f"{pool.name}.yaml"] = _worker_documents(options, pool)
    files["orchestrator.yaml"] = _orchestrator_documents(options)
    files["console.yaml"] = _console_documents(options)
    return files


def render_k8s(options: K8sOptions, inputs: str) -> dict[str, str]:
    """File name -> text; `kustomization.yaml` lists the rest. `inputs` heads every file."""
    header = f"# Generated by `make k8s` ({inputs}); Kubernetes {K8S_VERSION}. Do not edit.\n"
    texts = {
        name: header + "---\n".join(dump_yaml(d) for d in documents)
        for name, documents in manifests(options).items()
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(texts),
    }
    texts["kustomization.yaml"] = header + dump_yaml(kustomization)
    return texts


def write_k8s(files: Mapping[str, str], out: Path) -> list[Path]:
    """Write `files` into `out`; a `.yaml` there that is no longer generated is removed (a
    pool dropped). Returns the paths that changed."""
    out.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in files.items():
        path = out / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.write_text(text, encoding="utf-8")
        changed.append(path)
    for path in sorted(out.glob("*.yaml")):
        if path.name not in files:
            path.unlink()
            changed.append(path)
    return changed
