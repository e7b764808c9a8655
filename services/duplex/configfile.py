"""One config loader for every process: a YAML file, environment overrides, frozen dataclasses.

How a process's config module uses it (see ``duplex/worker/config.py``)::

    from duplex.configfile import ConfigError as ConfigError  # re-exported for callers
    from duplex.configfile import apply_env, build_section, read_yaml

    ENV_OVERRIDES = MappingProxyType({"REDIS_URL": ("redis", "url"),
                                      "DUPLEX_ORCH_PORT": ("transport.websocket", "port")})

    def load_my_config(path: Path | None, env: Mapping[str, str]) -> MyConfig:
        raw = read_yaml(path) if path is not None else {}
        config = build_section(MyConfig, apply_env(raw, env, ENV_OVERRIDES))
        _validate(config)  # cross-section checks, if any; raise ConfigError
        return config

The schema is the dataclasses themselves: each field's type says how its YAML value is checked
(``bool``, ``int``, ``float``, ``str``, an ``Enum`` by value, ``tuple[int | str | Enum, ...]`` from
a list, ``tuple[SomeDataclass, ...]`` from a list of mappings, a dataclass as a nested section).
A field without a default is required. Unknown keys are errors naming the key and the known
ones, so a typo never falls back to a default silently. Range checks belong in each dataclass's
``__post_init__`` (a ValueError there becomes a ConfigError). Environment values arrive as
strings and are converted to the field's type with the variable named in any error; tuple
fields take a comma-separated list; an empty variable means "not set".
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SCALAR_NAMES: Mapping[type[Any], str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
}


class ConfigError(ValueError):
    """The configuration file or an environment override is invalid."""


@dataclass(frozen=True)
class EnvValue:
    """A string from environment variable `var`, converted once the key's type is known."""

    var: str
    text: str


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of the YAML file at `path` ({} for an empty file)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid YAML: not UTF-8 text ({exc.reason})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def apply_env(
    raw: Mapping[str, Any],
    env: Mapping[str, str],
    overrides: Mapping[str, tuple[str, str]],
) -> dict[str, Any]:
    """A copy of `raw` with each set variable of `overrides` placed at (section path, key).

    The section path is dotted (``"transport.websocket"``). A variable that is unset, empty
    or blank changes nothing (as in a `.env` file with `REDIS_URL=`). `raw` is not modified.
    """
    out = dict(raw)
    for var, (section, key) in overrides.items():
        text = env.get(var, "")
        if not text.strip():
            continue
        node = out
        walked: list[str] = []
        for part in section.split("."):
            walked.append(part)
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(walked)} must be a mapping, got {child!r}")
            node[part] = child = dict(child)  # copied: the caller's mapping stays as it was
            node = child
        node[key] = EnvValue(var, text)
    return out


def build_section(cls: type[T], raw: Any, name: str = "") -> T:
    """Build dataclass `cls` from the mapping `raw` (None: empty), checking every value.

    `name` is the section's dotted path in messages (`""` for the top level).
    """
    values = _mapping(raw, name)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_unknown_key(name, str(key), sorted(fields), value))
    kwargs: dict[str, Any] = {}
    for key, f in fields.items():
        label = _join(name, key)
        kind = hints[key]
        value = values.get(key)
        if value is None:  # absent, or `key:` with nothing after it
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            if not _is_dataclass(kind):
                raise ConfigError(f"missing required key {label}")
            value = {}  # a required section: its own required keys are named
        kwargs[key] = _convert(value, kind, label)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # __post_init__ range checks
        message = str(exc)
        if name and not message.startswith(name):
            message = f"{name}: {message}"
        raise ConfigError(message) from exc


def _mapping(raw: Any, name: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name or 'the top level'} must be a mapping, got {raw!r}")
    return raw


def _join(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


def _unknown_key(name: str, key: str, known: list[str], value: Any) -> str:
    source = f" (set by {value.var})" if isinstance(value, EnvValue) else ""
    where = f"unknown key {name}.{key}{source}" if name else f"unknown key {key!r} at the top level"
    return f"{where}; known: {', '.join(known)}"


def _is_dataclass(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, enum.Enum)


def _tuple_item(kind: Any) -> Any:
    """X for ``tuple[X, ...]``, None for any other type."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def _convert(value: Any, kind: Any, label: str) -> Any:
    if isinstance(value, EnvValue):
        return _from_env(value, kind, label)
    if _is_dataclass(kind):
        return build_section(kind, value, label)
    item = _tuple_item(kind)
    if item is not None:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{label} must be {_expected(kind)}, got {value!r}")
        if _is_dataclass(item):
            return tuple(build_section(item, v, f"{label}[{i}]") for i, v in enumerate(value))
        try:
            return tuple(_scalar(v, item, label) for v in value)
        except ConfigError:
            raise ConfigError(f"{label} must be {_expected(kind)}, got {value!r}") from None
    return _scalar(value, kind, label)


def _scalar(value: Any, kind: Any, label: str) -> Any:
    if _is_enum(kind):
        for member in kind:
            if member.value == value:
                return member
        raise ConfigError(f"{label} must be {_expected(kind)}, got {value!r}")
    if kind not in _SCALAR_NAMES:
        raise TypeError(f"{label}: the config loader cannot read fields of type {kind!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is an int in Python, never in a config file: `resident_cap: true` is an error.
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(f"{label} must be {_expected(kind)}, got {value!r}")


def _from_env(value: EnvValue, kind: Any, label: str) -> Any:
    item = _tuple_item(kind)
    try:
        if item is not None and not _is_dataclass(item):
            parts = (p.strip() for p in value.text.split(","))
            return tuple(_parse(p, item) for p in parts if p)
        return _parse(value.text.strip(), kind)
    except ValueError:
        raise ConfigError(
            f"environment variable {value.var} ({label}) must be {_expected(kind)}, "
            f"got {value.text!r}"
        ) from None


def _parse(text: str, kind: Any) -> Any:
    """`text` as a `kind`; ValueError when it is not one."""
    if _is_enum(kind):
        return kind(text)
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(text)
    if kind in (int, float, str):
        return kind(text)
    raise TypeError(f"no environment form for fields of type {kind!r}")


def _expected(kind: Any) -> str:
    """What a value of `kind` must be, as the end of "... must be <this>"."""
    if _is_enum(kind):
        return "one of " + _values(kind)
    item = _tuple_item(kind)
    if item is None:
        return f"of type {_SCALAR_NAMES.get(kind, repr(kind))}"
    if _is_dataclass(item):
        return "a list of mappings"
    if _is_enum(item):
        return "a list of values among " + _values(item)
    return f"a list of {_SCALAR_NAMES.get(item, repr(item))}s"


def _values(kind: type[enum.Enum]) -> str:
    return ", ".join(repr(member.value) for member in kind)
