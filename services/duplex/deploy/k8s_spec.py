"""The inputs of `make k8s`, checked before anything is written (a bad one names itself)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from duplex.deploy.spec import DeployError
from duplex.deploy.weights import ModelClaim, claim_variable, needs_weights
from duplex.registry._connect import check_redis_url

K8S_VERSION = "1.33.0"
"""The Kubernetes version the manifests are validated against (kubernetes-validate)."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_REPLICAS = 1024


@dataclass(frozen=True)
class PoolSpec:
    """One worker Deployment: an adapter, the model it loads first, and how many GPUs."""

    adapter: str
    model_id: str
    replicas: int

    @property
    def name(self) -> str:
        return f"worker-{self.adapter}"


@dataclass(frozen=True)
class K8sOptions:
    """Everything the manifests depend on; the same options give the same bytes."""

    gpus_per_node: int
    nodes: int
    pools: tuple[PoolSpec, ...]
    orchestrators: int = 2
    namespace: str = "duplex"
    image_tag: str = "latest"
    image_prefix: str = ""  # a registry path ending in "/", e.g. "registry.lan:5000/"
    redis_url: str = ""  # empty: Redis runs in the cluster (a StatefulSet)
    redis_image: str = "redis:7-alpine"
    webrtc: bool = False  # orchestrators on the nodes' network, one per node
    # The existing claims with the weights of the pools that need them (XTTS_MODEL_PVC, ...).
    model_claims: tuple[ModelClaim, ...] = ()

    def __post_init__(self) -> None:
        for pool in self.pools:
            if needs_weights(pool.adapter) and self.claim(pool.adapter) is None:
                raise DeployError(
                    f"{pool.name} needs its weights: give {claim_variable(pool.adapter)}"
                )
        if not _DNS_LABEL.match(self.namespace):
            raise DeployError(f"NAMESPACE={self.namespace!r}: not a DNS label (a-z, 0-9, -)")
        if self.orchestrators < 1:
            raise DeployError(f"ORCHESTRATORS={self.orchestrators}: give 1 or more")
        if self.webrtc and self.orchestrators > self.nodes:
            raise DeployError(
                f"ORCHESTRATORS={self.orchestrators} with WEBRTC=1: at most one per node "
                f"(NODES={self.nodes}); WebRTC orchestrators use the node's network"
            )
        if self.redis_url:
            problem = check_redis_url(self.redis_url)
            if problem is not None:
                raise DeployError(f"REDIS_URL={self.redis_url!r}: {problem}")
            if urlsplit(self.redis_url.split(",")[0]).password:
                raise DeployError(
                    "REDIS_URL holds a password: the manifests are not secret. Give the URL "
                    "without it here, and the whole URL as REDIS_URL in the duplex-secrets Secret"
                )

    def claim(self, adapter: str) -> ModelClaim | None:
        """The claim with `adapter`'s weights, if one was given."""
        return next((c for c in self.model_claims if c.adapter == adapter), None)

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


def parse_positive(name: str, value: str, *, default: int | None = None) -> int:
    text = value.strip()
    if not text and default is not None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_REPLICAS:
        raise DeployError(f"{name}={value!r}: give a whole number from 1 to {MAX_REPLICAS}")
    return int(text)


def parse_pools(value: str, gpus: int, models: Mapping[str, Sequence[str]]) -> tuple[PoolSpec, ...]:
    """`piper` or `piper:4,kokoro:2` (adapter[:GPUs]); pools without a count share the GPUs
    that the counted ones leave (the first pools take the remainder). Every GPU gets a worker."""
    items = [i.strip() for i in (value or "piper").split(",") if i.strip()]
    if not items:
        raise DeployError(f"POOLS={value!r}: name at least one adapter")
    counted: dict[str, int | None] = {}
    for item in items:
        adapter, _, text = item.partition(":")
        if adapter not in models or not models[adapter]:
            known = ", ".join(a for a in models if models[a])
            raise DeployError(f"POOLS={value!r}: {adapter!r} is not an adapter ({known})")
        if adapter in counted:
            raise DeployError(f"POOLS={value!r}: {adapter!r} is named twice")
        counted[adapter] = parse_positive("POOLS", text) if text else None
    fixed = sum(c for c in counted.values() if c is not None)
    free = [a for a, c in counted.items() if c is None]
    left = gpus - fixed
    if left < len(free) or (not free and left != 0):
        raise DeployError(
            f"POOLS={value!r}: {fixed} GPUs counted for {gpus} GPUs "
            f"(GPUS_PER_NODE x NODES): every GPU gets exactly one worker"
        )
    pools = []
    for adapter, fixed_count in counted.items():
        if fixed_count is None:
            index = free.index(adapter)
            replicas = left // len(free) + (1 if index < left % len(free) else 0)
        else:
            replicas = fixed_count
        pools.append(PoolSpec(adapter, models[adapter][0], replicas))
    return tuple(pools)
