"""The address a worker announces (`grpc://HOST:port`): one every orchestrator can dial.

`worker.advertise_host` (`DUPLEX_WORKER_ADVERTISE_HOST`) names it, or `auto` picks this host's
source address on the route to Redis: the interface the registry's readers most likely share
with it. A worker that would announce a loopback address (or listen only on loopback) while
Redis lives on another host refuses to start: orchestrators there would route sessions to
their own machine.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from duplex.registry._connect import SENTINEL_SCHEMES, parse_sentinel_url

AUTO = "auto"


class AdvertiseError(RuntimeError):
    """The worker cannot announce an address that the other hosts reach."""


def redis_host(url: str) -> tuple[str, int] | None:
    """Host and port of the registry (the first Sentinel for a Sentinel URL); None for a
    Unix socket (this host)."""
    if url.startswith("unix://"):
        return None
    if url.startswith(SENTINEL_SCHEMES):
        return parse_sentinel_url(url).sentinels[0]
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or 6379


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; a name is resolved (a name that does not resolve is
    taken as not loopback: the worker cannot know)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def route_source(host: str, port: int) -> str:
    """This host's source address towards `host` (a connected UDP socket sends nothing)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise AdvertiseError(f"cannot resolve the Redis host {host!r}")
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(address)
        except OSError as exc:
            raise AdvertiseError(f"no route to Redis at {host}:{port}: {exc}") from exc
        return str(probe.getsockname()[0])


def resolve_advertise_host(configured: str, redis_url: str, *, bind_host: str) -> str:
    """The host to announce; raises AdvertiseError with what to set when no address works."""
    target = redis_host(redis_url)
    remote = target is not None and not is_loopback(target[0])
    where = target[0] if target is not None else "a Unix socket"
    host = configured.strip()
    if host in ("", AUTO):
        if target is None:
            return "127.0.0.1"
        host = route_source(*target)
    if remote and is_loopback(host):
        raise AdvertiseError(
            f"the worker would announce {host!r}, but Redis ({where}) is on another host: "
            "orchestrators there could not reach it. Set worker.advertise_host "
            "(DUPLEX_WORKER_ADVERTISE_HOST) to this host's address, or to 'auto' (the address "
            "on the route to Redis)"
        )
    if remote and is_loopback(bind_host):
        raise AdvertiseError(
            f"the worker listens on {bind_host} only, but Redis ({where}) is on another "
            "host: set worker.host (DUPLEX_WORKER_HOST) to 0.0.0.0 or this host's address"
        )
    return host
