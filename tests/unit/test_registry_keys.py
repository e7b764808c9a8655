"""Redis key names and keyspace-channel parsing."""

from __future__ import annotations

from duplex.registry import keys


def test_key_names_are_the_documented_ones() -> None:
    """The console and docs rely on these exact names."""
    assert keys.worker_key("gpu0") == "worker:gpu0"
    assert keys.WORKER_PREFIX == "worker:"
    assert keys.LIVE_INDEX == "workers:live"
    assert keys.DRAINED == "workers:drained"
    assert keys.ROUTING == "routing:strategy"


def test_worker_name_from_a_keyspace_channel_or_a_key() -> None:
    """Both `__keyspace@3__:worker:a:b` and `worker:a:b` name worker `a:b`."""
    assert keys.worker_name("__keyspace@3__:worker:a:b") == "a:b"
    assert keys.worker_name("worker:gpu0") == "gpu0"


def test_registry_sets_are_not_worker_hashes() -> None:
    """`workers:live`, `workers:drained`, and a bare prefix are not workers."""
    assert keys.worker_name("__keyspace@0__:workers:live") is None
    assert keys.worker_name(keys.DRAINED) is None
    assert keys.worker_name("worker:") is None
    assert keys.worker_name("__keyspace@0__:routing:strategy") is None


def test_keyspace_channels_and_pattern() -> None:
    """Channels carry the database number; the pattern covers only worker hashes."""
    assert keys.keyspace_channel(2, keys.DRAINED) == "__keyspace@2__:workers:drained"
    assert keys.worker_channel_pattern(0) == "__keyspace@0__:worker:*"
    assert keys.key_of("__keyspace@0__:routing:strategy") == keys.ROUTING
