"""The worker's announced address: named, or found on the route to Redis; never loopback when
Redis is on another host."""

from __future__ import annotations

import pytest
from duplex.worker.advertise import AdvertiseError, redis_host, resolve_advertise_host


def test_auto_with_a_local_redis_announces_the_loopback_route() -> None:
    assert resolve_advertise_host("auto", "redis://127.0.0.1:6379/0", bind_host="127.0.0.1") == (
        "127.0.0.1"
    )
    assert resolve_advertise_host("", "unix:///run/redis.sock", bind_host="127.0.0.1") == (
        "127.0.0.1"
    )


def test_a_named_host_is_announced_as_given() -> None:
    url = "rediss://:pw@10.9.8.7:6380/0"
    assert resolve_advertise_host("gpu-a.lan", url, bind_host="0.0.0.0") == "gpu-a.lan"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "127.0.1.1"])
def test_a_loopback_address_is_refused_when_redis_is_remote(host: str) -> None:
    with pytest.raises(AdvertiseError, match=r"Redis \(10\.9\.8\.7\) is on another host"):
        resolve_advertise_host(host, "redis://10.9.8.7:6379/0", bind_host="0.0.0.0")


def test_listening_on_loopback_only_is_refused_when_redis_is_remote() -> None:
    with pytest.raises(AdvertiseError, match="DUPLEX_WORKER_HOST"):
        resolve_advertise_host("10.0.0.5", "redis://10.9.8.7:6379/0", bind_host="127.0.0.1")


def test_the_registry_host_of_each_url_kind() -> None:
    assert redis_host("redis://r.lan/0") == ("r.lan", 6379)
    assert redis_host("redis+sentinel://s1:26379,s2:26379/registry") == ("s1", 26379)
    assert redis_host("unix:///run/redis.sock") is None
