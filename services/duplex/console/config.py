"""The console's configuration: `config/console.yaml`, then environment overrides.

```yaml
console: {host, port, admin_token, session_secret, demo_url, grafana_url, refresh_ms}
redis:   {url, worker_ttl_ms, reconcile_interval_ms}
```

Loaded by :mod:`duplex.configfile` (unknown keys and wrong types are errors naming the key).
The two secrets are best given by the environment (`CONSOLE_ADMIN_TOKEN`,
`CONSOLE_SESSION_SECRET`) rather than the file; neither appears in a `repr`. A console bound
to an address other than loopback without an admin token is refused here, before it starts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from duplex.configfile import ConfigError as ConfigError
from duplex.configfile import apply_env, build_section, read_yaml
from duplex.registry._connect import check_redis_url

# Below this the page polls faster than the registry view can change (it reconciles at 1 s
# and follows events), and above it the "within 2 s" cannot hold.
MIN_REFRESH_MS = 250
MAX_REFRESH_MS = 2000

ENV_OVERRIDES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "CONSOLE_HOST": ("console", "host"),
        "CONSOLE_PORT": ("console", "port"),
        "CONSOLE_ADMIN_TOKEN": ("console", "admin_token"),
        "CONSOLE_SESSION_SECRET": ("console", "session_secret"),
        "CONSOLE_DEMO_URL": ("console", "demo_url"),
        "CONSOLE_GRAFANA_URL": ("console", "grafana_url"),
        "REDIS_URL": ("redis", "url"),
        "DUPLEX_WORKER_TTL_MS": ("redis", "worker_ttl_ms"),
    }
)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleSection:
    """Where the console listens, its secrets, its links and how often pages refresh."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Signs in an operator; empty: nobody can sign in (and only a loopback bind is allowed).
    admin_token: str = field(default="", repr=False)
    # Signs the session cookie; empty: a random secret per process (sessions end on restart).
    session_secret: str = field(default="", repr=False)
    demo_url: str = "http://127.0.0.1:8080/"
    grafana_url: str = "http://127.0.0.1:3000/"
    refresh_ms: int = 1000

    def __post_init__(self) -> None:
        _require(bool(self.host.strip()), "console.host must not be empty")
        _require(0 <= self.port <= 65535, "console.port must be within 0..65535")
        _require(
            MIN_REFRESH_MS <= self.refresh_ms <= MAX_REFRESH_MS,
            f"console.refresh_ms must be within {MIN_REFRESH_MS}..{MAX_REFRESH_MS}",
        )
        _require(
            self.admin_token == self.admin_token.strip(),
            "console.admin_token must not start or end with blanks",
        )

    @property
    def loopback(self) -> bool:
        """Bound to loopback: read-only pages are open without a sign-in."""
        return is_loopback(self.host)


@dataclass(frozen=True)
class ConsoleRedisConfig:
    """The registry the console reads (the same Redis as the orchestrators and workers)."""

    url: str = "redis://localhost:6379"
    # A worker whose heartbeat is older than this is gone (the orchestrator's value).
    worker_ttl_ms: int = 15000
    reconcile_interval_ms: int = 1000

    def __post_init__(self) -> None:
        problem = check_redis_url(self.url)
        _require(problem is None, problem or "")
        _require(self.worker_ttl_ms > 0, "redis.worker_ttl_ms must be > 0")
        _require(self.reconcile_interval_ms > 0, "redis.reconcile_interval_ms must be > 0")


@dataclass(frozen=True)
class ConsoleConfig:
    """The whole `console.yaml`."""

    console: ConsoleSection = field(default_factory=ConsoleSection)
    redis: ConsoleRedisConfig = field(default_factory=ConsoleRedisConfig)


def check_bind(config: ConsoleConfig) -> None:
    """Refuse a console reachable from other machines that anyone could steer."""
    section = config.console
    if not section.loopback and not section.admin_token:
        raise ConfigError(
            f"console.host is {section.host!r}, not a loopback address, and no admin token is "
            "set: anyone who reaches the port could steer the fleet. Set CONSOLE_ADMIN_TOKEN "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`), or bind "
            "to 127.0.0.1."
        )


def load_console_config(path: Path | None, env: Mapping[str, str]) -> ConsoleConfig:
    """`path` (None: defaults) with the environment overrides applied, checked."""
    raw = read_yaml(path) if path is not None else {}
    config = build_section(ConsoleConfig, apply_env(raw, env, ENV_OVERRIDES))
    check_bind(config)
    return config
