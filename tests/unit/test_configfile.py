"""The shared config loader: YAML file, environment overrides, typed frozen dataclasses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from duplex.configfile import ConfigError, EnvValue, apply_env, build_section, read_yaml


class Policy(Enum):
    STOP = "stop"
    RESUME = "resume"


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080
    idle_timeout_s: float = 60.0
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Transport:
    listen: Listen = field(default_factory=Listen)
    enabled: bool = True


@dataclass(frozen=True)
class Rule:
    adapter_type: str
    priority: int = 1

    def __post_init__(self) -> None:
        if self.priority < 1:
            raise ValueError(f"priority must be >= 1, got {self.priority}")


@dataclass(frozen=True)
class Identity:
    name: str
    rates: tuple[int, ...] = (16000,)
    policy: Policy = Policy.STOP
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Config:
    identity: Identity
    transport: Transport = field(default_factory=Transport)


@dataclass(frozen=True)
class Odd:
    value: complex = 0j


OVERRIDES = {
    "NAME": ("identity", "name"),
    "RATES": ("identity", "rates"),
    "POLICY": ("identity", "policy"),
    "PORT": ("transport.listen", "port"),
    "IDLE": ("transport.listen", "idle_timeout_s"),
    "ADDRESSES": ("transport.listen", "addresses"),
    "ENABLED": ("transport", "enabled"),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _load(raw: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    return build_section(Config, apply_env(raw, env or {}, OVERRIDES))


# -- read_yaml ------------------------------------------------------------------------------


def test_read_yaml_returns_the_top_level_mapping(tmp_path: Path) -> None:
    """A mapping comes back as a dict; an empty file is an empty mapping."""
    assert read_yaml(_write(tmp_path, "identity: {name: a}\n")) == {"identity": {"name": "a"}}
    assert read_yaml(_write(tmp_path, "")) == {}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read"),
        ("identity: [unclosed", "not valid YAML"),
        (b"\xff\xfe\x00bad", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("just text", "top level must be a mapping"),
    ],
)
def test_read_yaml_errors_are_config_errors_naming_the_file(
    tmp_path: Path, content: str | bytes | None, needle: str
) -> None:
    """Missing file, broken YAML, bad encoding, a list at the top: ConfigError with the path."""
    path = tmp_path / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=needle) as info:
        read_yaml(path)
    assert str(path) in str(info.value)


# -- apply_env ------------------------------------------------------------------------------


def test_apply_env_places_values_at_nested_paths_without_touching_the_input() -> None:
    """Variables land at (section path, key), creating sections; the caller's dict is unchanged."""
    raw: dict[str, Any] = {"transport": {"listen": {"host": "h"}}}
    out = apply_env(raw, {"PORT": "9000", "NAME": "n"}, OVERRIDES)
    assert out["transport"]["listen"] == {"host": "h", "port": EnvValue("PORT", "9000")}
    assert out["identity"] == {"name": EnvValue("NAME", "n")}
    assert raw == {"transport": {"listen": {"host": "h"}}}


def test_apply_env_treats_empty_and_blank_variables_as_unset() -> None:
    """`PORT=` or `PORT=  ` in a .env file keeps the file's value; others are ignored."""
    raw = {"transport": {"listen": {"port": 1}}}
    assert apply_env(raw, {"PORT": "", "NAME": "  ", "OTHER": "x"}, OVERRIDES) == raw


def test_apply_env_into_a_section_that_is_not_a_mapping_is_an_error() -> None:
    """A file with `transport: [1]` cannot take an override under transport."""
    with pytest.raises(ConfigError, match="transport must be a mapping"):
        apply_env({"transport": [1]}, {"PORT": "1"}, OVERRIDES)


# -- build_section: keys --------------------------------------------------------------------


def test_a_full_mapping_builds_frozen_nested_dataclasses() -> None:
    """Nested sections, tuples, enums and lists of mappings become typed frozen values."""
    config = _load(
        {
            "identity": {
                "name": "w",
                "rates": [16000, 48000],
                "policy": "resume",
                "rules": [{"adapter_type": "piper", "priority": 2}],
            },
            "transport": {"listen": {"port": 7, "idle_timeout_s": 5, "addresses": ["a"]}},
        }
    )
    assert config == Config(
        identity=Identity("w", (16000, 48000), Policy.RESUME, (Rule("piper", 2),)),
        transport=Transport(Listen(port=7, idle_timeout_s=5.0, addresses=("a",))),
    )
    assert isinstance(config.transport.listen.idle_timeout_s, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.identity.name = "x"  # type: ignore[misc]


def test_absent_or_null_keys_take_their_defaults() -> None:
    """A missing section or `key:` with no value keeps the dataclass default."""
    config = _load({"identity": {"name": "w", "rates": None}, "transport": None})
    assert config == Config(identity=Identity("w"))


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"identity": {"name": "w"}, "transprt": {}}, "unknown key 'transprt' at the top level"),
        ({"identity": {"name": "w", "nme": 1}}, "unknown key identity.nme"),
        (
            {"identity": {"name": "w"}, "transport": {"listen": {"prot": 1}}},
            "transport.listen.prot",
        ),
        ({"identity": {"name": "w", "rules": [{"adapter": "x"}]}}, "identity.rules[0].adapter"),
    ],
)
def test_an_unknown_key_is_rejected_naming_it_and_the_known_keys(
    raw: dict[str, Any], needle: str
) -> None:
    """A typo fails with its full dotted path and the keys that would have been accepted."""
    with pytest.raises(ConfigError) as info:
        _load(raw)
    assert needle in str(info.value)
    assert "known: " in str(info.value)


def test_the_known_keys_are_listed_in_the_message() -> None:
    """The message lists the section's keys, sorted."""
    with pytest.raises(ConfigError, match=r"known: addresses, host, idle_timeout_s, port$"):
        build_section(Listen, {"hots": "x"}, "listen")


def test_a_missing_required_key_is_named_even_in_a_missing_section() -> None:
    """Without an identity section the error names identity.name, the key to add."""
    with pytest.raises(ConfigError, match=r"missing required key identity\.name"):
        _load({})
    with pytest.raises(ConfigError, match=r"missing required key identity\.rules\[1\]\.adapter"):
        _load({"identity": {"name": "w", "rules": [{"adapter_type": "a"}, {}]}})


def test_a_section_that_is_not_a_mapping_is_named() -> None:
    """`transport: [1]` names transport."""
    with pytest.raises(ConfigError, match=r"transport must be a mapping"):
        _load({"identity": {"name": "w"}, "transport": [1]})


def test_a_post_init_value_error_becomes_a_config_error_with_the_section() -> None:
    """Range checks stay in the dataclass; the loader adds where they failed."""
    with pytest.raises(ConfigError, match=r"identity\.rules\[0\]: priority must be >= 1"):
        _load({"identity": {"name": "w", "rules": [{"adapter_type": "a", "priority": 0}]}})


# -- build_section: types -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "needle"),
    [
        ({"port": "80"}, "transport.listen.port must be of type integer, got '80'"),
        ({"port": True}, "transport.listen.port must be of type integer, got True"),
        ({"port": 1.5}, "transport.listen.port must be of type integer"),
        ({"idle_timeout_s": "5"}, "transport.listen.idle_timeout_s must be of type number"),
        ({"idle_timeout_s": False}, "transport.listen.idle_timeout_s must be of type number"),
        ({"host": 5}, "transport.listen.host must be of type string"),
        ({"addresses": "a,b"}, "transport.listen.addresses must be a list of strings"),
        ({"addresses": ["a", 1]}, "transport.listen.addresses must be a list of strings"),
    ],
)
def test_a_wrongly_typed_value_is_rejected_naming_the_key_and_type(
    listen: dict[str, Any], needle: str
) -> None:
    """Strings are not numbers, booleans are not numbers, lists hold their item type."""
    with pytest.raises(ConfigError) as info:
        _load({"identity": {"name": "w"}, "transport": {"listen": listen}})
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("identity", "needle"),
    [
        ({"rates": [16000, "8k"]}, "identity.rates must be a list of integers"),
        ({"rates": [True]}, "identity.rates must be a list of integers"),
        ({"policy": "pause"}, "identity.policy must be one of 'stop', 'resume', got 'pause'"),
        ({"rules": {"adapter_type": "x"}}, "identity.rules must be a list of mappings"),
        ({"rules": ["x"]}, "identity.rules[0] must be a mapping"),
    ],
)
def test_tuples_enums_and_lists_of_mappings_are_checked(
    identity: dict[str, Any], needle: str
) -> None:
    """Every item of a list is checked; an enum takes only its values."""
    with pytest.raises(ConfigError) as info:
        _load({"identity": {"name": "w", **identity}})
    assert needle in str(info.value)


def test_enabled_accepts_a_yaml_boolean_only() -> None:
    """`enabled: false` is a boolean; `enabled: 1` is not one."""
    assert (
        _load({"identity": {"name": "w"}, "transport": {"enabled": False}}).transport.enabled
        is False
    )
    with pytest.raises(ConfigError, match=r"transport\.enabled must be of type boolean"):
        _load({"identity": {"name": "w"}, "transport": {"enabled": 1}})


# -- environment values ---------------------------------------------------------------------


def test_environment_strings_are_converted_to_each_keys_type() -> None:
    """Integers, numbers, booleans, enums and comma-separated tuples come from strings."""
    env = {
        "NAME": " w ",
        "RATES": "16000, 24000,48000",
        "POLICY": "resume",
        "PORT": "9000",
        "IDLE": "2.5",
        "ADDRESSES": "127.0.0.1, ::1,",
        "ENABLED": "off",
    }
    config = _load({"identity": {"name": "file"}, "transport": {"listen": {"port": 1}}}, env)
    assert config.identity == Identity("w", (16000, 24000, 48000), Policy.RESUME)
    assert config.transport == Transport(
        Listen("127.0.0.1", 9000, 2.5, ("127.0.0.1", "::1")), False
    )


@pytest.mark.parametrize(
    ("var", "text", "needle"),
    [
        ("PORT", "eighty", "transport.listen.port) must be of type integer, got 'eighty'"),
        ("IDLE", "soon", "must be of type number"),
        ("ENABLED", "maybe", "must be of type boolean"),
        ("RATES", "16000,8k", "must be a list of integers, got '16000,8k'"),
        ("POLICY", "pause", "must be one of 'stop', 'resume', got 'pause'"),
    ],
)
def test_a_malformed_environment_value_names_the_variable(var: str, text: str, needle: str) -> None:
    """The error says which variable to fix, the key it sets and the type it needs."""
    with pytest.raises(ConfigError) as info:
        _load({"identity": {"name": "w"}}, {var: text})
    assert f"environment variable {var} (" in str(info.value)
    assert needle in str(info.value)


def test_an_override_for_a_key_that_does_not_exist_names_the_variable() -> None:
    """A wrong override table fails loudly, naming the variable that set the key."""
    env = apply_env({"identity": {"name": "w"}}, {"X": "1"}, {"X": ("identity", "nam")})
    with pytest.raises(ConfigError, match=r"unknown key identity\.nam \(set by X\)"):
        build_section(Config, env)


def test_a_field_type_the_loader_cannot_read_is_a_programming_error() -> None:
    """A field of a type with no config form is refused with TypeError, not ConfigError."""
    with pytest.raises(TypeError, match="cannot read fields of type"):
        build_section(Odd, {"value": 1})
