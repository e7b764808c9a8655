"""How every registry component connects to Redis: with deadlines and a bounded retry.

One URL says where the registry is and how to reach it:

- ``redis://[[user]:password@]host:port/db``: plain TCP (a password where Redis wants one);
- ``rediss://...``: TLS; the query names the files (``?ssl_ca_certs=/etc/duplex/ca.pem``,
  and ``ssl_certfile``/``ssl_keyfile`` where Redis asks clients for a certificate);
- ``unix:///run/redis.sock?db=0``;
- ``redis+sentinel://[[user]:password@]s1:26379,s2:26379/SERVICE[/db]`` (``rediss+sentinel``
  for TLS): the master of ``SERVICE`` as Redis Sentinel names it, found again after a
  failover. The password is the data nodes'; ``?sentinel_password=`` when the Sentinels have
  their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

# What a Redis outage looks like to a caller (redis-py's ConnectionError and TimeoutError
# derive from RedisError; an OSError can escape from a half-closed socket).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
REDIS_SCHEMES: tuple[str, ...] = ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES)
"""URL schemes `open_redis` accepts (configs check theirs against this)."""

_TLS_QUERY = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_ca_path")


class RedisUrlError(ValueError):
    """A registry URL that cannot be used (the message names the part that is wrong)."""


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None
    tls: bool
    tls_options: Mapping[str, str]


def check_redis_url(url: str) -> str | None:
    """Why `url` cannot be a registry URL, or None when it can."""
    if not url.startswith(REDIS_SCHEMES):
        return "redis.url must start with " + ", ".join(REDIS_SCHEMES)
    if url.startswith(SENTINEL_SCHEMES):
        try:
            parse_sentinel_url(url)
        except RedisUrlError as exc:
            return f"redis.url: {exc}"
    return None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[[user]:password@]h1:p1,h2:p2/SERVICE[/db][?query]``."""
    parts = urlsplit(url)
    # urlsplit cannot read a comma-separated host list as one port: split the netloc by hand.
    netloc = parts.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) or None
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise RedisUrlError(f"sentinel address {item!r} must be host:port")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise RedisUrlError("a Sentinel URL names the master's service: .../SERVICE[/db]")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise RedisUrlError(f"path {parts.path!r} must be /SERVICE or /SERVICE/db")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"sentinel_password", *_TLS_QUERY}
    if unknown:
        raise RedisUrlError(f"unknown Sentinel URL option(s): {', '.join(sorted(unknown))}")
    return SentinelTarget(
        sentinels=tuple(sentinels),
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=username,
        password=password,
        sentinel_password=query.get("sentinel_password"),
        tls=parts.scheme == "rediss+sentinel",
        tls_options={k: v for k, v in query.items() if k in _TLS_QUERY},
    )


class _SentinelRedis(redis.Redis):
    """The master's client; closing it closes the connections to the Sentinels too."""

    owner: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.owner is not None:
            await self.owner.aclose()


def open_redis(url: str, *, timeout_s: float, retries: int = 1) -> redis.Redis:
    """A client whose every connect and read has a deadline.

    redis-py's default retries ten times with backoff, which turns one dead server into
    several seconds per call; one immediate retry is enough to replace a pooled connection
    that a Redis restart closed, and `retries=0` lets the caller see every reconnect.
    """
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), retries),
        "health_check_interval": 0,
    }
    if not url.startswith(SENTINEL_SCHEMES):
        return redis.Redis.from_url(url, **common)
    target = parse_sentinel_url(url)
    tls: dict[str, Any] = {"ssl": True, **target.tls_options} if target.tls else {}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        # A failover needs every Sentinel's view once; one is enough to find the master.
        min_other_sentinels=0,
        sentinel_kwargs={
            "password": target.sentinel_password,
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "decode_responses": True,
            **tls,
        },
    )
    client: _SentinelRedis = sentinel.master_for(
        target.service,
        redis_class=_SentinelRedis,
        db=target.db,
        username=target.username,
        password=target.password,
        **common,
        **tls,
    )
    client.owner = sentinel
    return client


async def follow_master(client: redis.Redis) -> bool:
    """Whether the Sentinels now name another master than the one `client` talks to; if so,
    its idle connections are closed, and its next command goes to the new master.

    redis-py asks the Sentinels only when it opens a connection, so a pooled connection to a
    master that a failover demoted, but that is still running (`SENTINEL FAILOVER`, or a
    partition healing), stays open and keeps taking writes until Sentinel reconfigures it,
    which it does only after its next INFO, up to 10 s later. Callers ask once per heartbeat
    or resync. False, with no I/O, for a client without Sentinel; False too when no Sentinel
    answers (the connection in hand may still work; a dead master shows on it anyway).
    """
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool) or not pool.is_master:
        return False
    before = pool.master_address
    # It records the new address before closing the old connections: compare with that even
    # when the closing fails.
    with contextlib.suppress(*REDIS_ERRORS):
        await pool.get_master_address()  # type: ignore[no-untyped-call]
    return before is not None and pool.master_address != before


def db_of(client: redis.Redis) -> int:
    """The database number the client's URL selected (keyspace channels are per database)."""
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def hash_fields(fields: Mapping[str, str]) -> Mapping[Any, Any]:
    """`fields` as redis-py's `hset(mapping=...)` is typed (its Mapping key is invariant)."""
    return fields


def describe(exc: BaseException) -> str:
    """An error for a one-line log ("ConnectionError: Connection refused")."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def redacted(url: str) -> str:
    """`url` without its password, for logs and pages."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hosts}" if userinfo else hosts).geturl()
