"""Every Redis key name the product uses, and the keyspace-notification channels for them.

The console, the docs and operators' `redis-cli` sessions rely on these exact names.
"""

from __future__ import annotations

import re

WORKER_PREFIX = "worker:"
"""`worker:{name}`: a hash (`WorkerRecord.encode()`) that expires after the worker's TTL."""

LIVE_INDEX = "workers:live"
"""Sorted set: member = worker name, score = its last heartbeat (unix seconds)."""

DRAINED = "workers:drained"
"""Set of worker names that get no new sessions."""

ROUTING = "routing:strategy"
"""Hash: `RoutingSettings.encode()`; overrides the orchestrator's configured routing."""

ORCHESTRATOR_PREFIX = "orchestrator:"
"""`orchestrator:{id}`: a hash (`OrchestratorRecord.encode()`) that expires after its TTL: one
orchestrator process, its in-flight counts per worker and its live sessions."""

ORCHESTRATORS_LIVE = "orchestrators:live"
"""Sorted set: member = orchestrator id, score = its last heartbeat (unix seconds)."""

INFLIGHT_PREFIX = "inflight:"
"""`inflight:{worker}`: a sorted set of that worker's live sessions across all orchestrators:
member = orchestrator id and session id, score = when its lease ends (unix seconds)."""

# Event types (the message payload of a keyspace notification) after which the key is gone.
REMOVAL_EVENTS = frozenset({"del", "expired", "evicted", "rename_from", "move_from", "unlink"})

_KEYSPACE_CHANNEL = re.compile(r"^__keyspace@\d+__:")


def worker_key(name: str) -> str:
    """The hash key of one worker."""
    return f"{WORKER_PREFIX}{name}"


def orchestrator_key(orchestrator_id: str) -> str:
    """The hash key of one orchestrator process."""
    return f"{ORCHESTRATOR_PREFIX}{orchestrator_id}"


def keyspace_channel(db: int, key: str) -> str:
    """The pub/sub channel on which Redis announces events for `key` in database `db`."""
    return f"__keyspace@{db}__:{key}"


def worker_channel_pattern(db: int) -> str:
    """The PSUBSCRIBE pattern that matches every worker hash's keyspace channel."""
    return keyspace_channel(db, f"{WORKER_PREFIX}*")


def key_of(channel_or_key: str) -> str:
    """The key named by a keyspace channel (`__keyspace@0__:worker:a` -> `worker:a`);
    a plain key is returned unchanged."""
    return _KEYSPACE_CHANNEL.sub("", channel_or_key, count=1)


def worker_name(channel_or_key: str) -> str | None:
    """The worker name if `channel_or_key` is a worker hash key (or its keyspace channel),
    else None. `workers:live` and `workers:drained` are not worker hashes."""
    key = key_of(channel_or_key)
    if key.startswith(WORKER_PREFIX) and len(key) > len(WORKER_PREFIX):
        return key[len(WORKER_PREFIX) :]
    return None
