"""Console config: defaults, the shipped file, environment overrides, secrets kept out of
reprs, and the refusal to serve other machines without an admin token."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from duplex.console.app import build_console_app
from duplex.console.config import (
    ConfigError,
    ConsoleConfig,
    ConsoleSection,
    is_loopback,
    load_console_config,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "console.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_shipped_file_holds_the_defaults() -> None:
    """config/console.yaml documents every key with its default value."""
    assert load_console_config(REPO / "config" / "console.yaml", {}) == ConsoleConfig()
    section = ConsoleConfig().console
    assert (section.host, section.port, section.refresh_ms) == ("127.0.0.1", 8000, 1000)
    assert section.admin_token == "" and section.session_secret == ""


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "console: {port: 9000}\nredis: {url: 'redis://a:1'}\n")
    config = load_console_config(
        path,
        {
            "CONSOLE_ADMIN_TOKEN": "t0ken",
            "CONSOLE_SESSION_SECRET": "s3cret",
            "CONSOLE_PORT": "9100",
            "REDIS_URL": "redis://b:2/3",
            "DUPLEX_WORKER_TTL_MS": "3000",
            "CONSOLE_GRAFANA_URL": "http://grafana.local:3000/",
        },
    )
    assert config.console.admin_token == "t0ken"
    assert config.console.session_secret == "s3cret"
    assert config.console.port == 9100
    assert config.console.grafana_url == "http://grafana.local:3000/"
    assert config.redis.url == "redis://b:2/3"
    assert config.redis.worker_ttl_ms == 3000


def test_a_non_loopback_bind_without_a_token_is_refused(tmp_path: Path) -> None:
    """The message says why and how to fix it; with a token the same bind is accepted."""
    with pytest.raises(ConfigError) as refused:
        load_console_config(None, {"CONSOLE_HOST": "0.0.0.0"})
    message = str(refused.value)
    assert "'0.0.0.0'" in message and "CONSOLE_ADMIN_TOKEN" in message
    with pytest.raises(ConfigError):
        load_console_config(write(tmp_path, "console: {host: '192.0.2.7'}\n"), {})
    config = load_console_config(None, {"CONSOLE_HOST": "0.0.0.0", "CONSOLE_ADMIN_TOKEN": "x"})
    assert config.console.host == "0.0.0.0" and not config.console.loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("console.example", False),
    ],
)
def test_loopback_means_only_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_secrets_stay_out_of_the_repr() -> None:
    section = ConsoleSection(admin_token="tok-abc", session_secret="sec-xyz")
    text = repr(ConsoleConfig(console=section))
    assert "tok-abc" not in text and "sec-xyz" not in text
    assert "refresh_ms=1000" in text


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("console: {refresh_ms: 5000}\n", "console.refresh_ms"),
        ("console: {refresh_ms: 50}\n", "console.refresh_ms"),
        ("console: {port: 70000}\n", "console.port"),
        ("console: {colour: blue}\n", "console.colour"),
        ("redis: {url: 'http://x'}\n", "redis.url"),
        ("redis: {worker_ttl_ms: 0}\n", "redis.worker_ttl_ms"),
        ("console: {admin_token: ' padded '}\n", "console.admin_token"),
    ],
)
def test_bad_values_are_errors_naming_the_key(tmp_path: Path, yaml_text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_console_config(write(tmp_path, yaml_text), {})


def test_the_app_itself_refuses_a_non_loopback_bind_without_a_token() -> None:
    """The same refusal guards build_console_app (a caller that skips the loader)."""
    config = ConsoleConfig(console=ConsoleSection(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="CONSOLE_ADMIN_TOKEN"):
        build_console_app(config)
    section = dataclasses.replace(config.console, admin_token="a-token")
    build_console_app(dataclasses.replace(config, console=section))
