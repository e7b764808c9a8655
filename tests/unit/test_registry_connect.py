"""Registry URLs: which schemes are accepted, how a Sentinel URL reads, what logs show."""

from __future__ import annotations

import pytest
from duplex.registry._connect import (
    RedisUrlError,
    check_redis_url,
    open_redis,
    parse_sentinel_url,
    redacted,
)


def test_a_sentinel_url_names_its_sentinels_service_db_and_secrets() -> None:
    target = parse_sentinel_url(
        "rediss+sentinel://app:pw@s1:26379,[::1]:26380/registry/3"
        "?sentinel_password=sp&ssl_ca_certs=/etc/ca.pem"
    )
    assert target.sentinels == (("s1", 26379), ("::1", 26380))
    assert (target.service, target.db) == ("registry", 3)
    assert (target.username, target.password, target.sentinel_password) == ("app", "pw", "sp")
    assert target.tls and dict(target.tls_options) == {"ssl_ca_certs": "/etc/ca.pem"}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://s1:26379", "names the master's service"),
        ("redis+sentinel://s1/registry", "must be host:port"),
        ("redis+sentinel://s1:1/registry/x", "/SERVICE or /SERVICE/db"),
        ("redis+sentinel://s1:1/registry?ssl=1", "unknown Sentinel URL option"),
    ],
)
def test_a_bad_sentinel_url_is_refused_naming_the_part(url: str, why: str) -> None:
    with pytest.raises(RedisUrlError, match=why):
        parse_sentinel_url(url)
    assert why in (check_redis_url(url) or "")


def test_every_supported_scheme_passes_the_check_and_others_do_not() -> None:
    for url in (
        "redis://h:6379/0",
        "rediss://:pw@h:6380/0?ssl_ca_certs=/ca.pem",
        "unix:///run/redis.sock",
        "redis+sentinel://s1:26379,s2:26379/registry",
    ):
        assert check_redis_url(url) is None, url
    assert "must start with" in (check_redis_url("http://h:6379") or "")


async def test_a_sentinel_client_is_a_master_client_of_the_named_service() -> None:
    client = open_redis("redis+sentinel://:pw@127.0.0.1:1/registry/2", timeout_s=0.5)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["db"], kwargs["password"]) == (2, "pw")
        assert client.connection_pool.service_name == "registry"  # type: ignore[attr-defined]
    finally:
        await client.aclose()


def test_logs_never_show_the_password() -> None:
    assert redacted("rediss://:s3cret@h:6380/0") == "rediss://:***@h:6380/0"
    assert redacted("redis://user:s3cret@h/0") == "redis://user:***@h/0"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"
