"""Orchestrator configuration: the deployment guide's `orchestrator.yaml`, plus env overrides.

Unknown keys are rejected (naming the key) so that a typo never silently falls back to a
default. Environment variables override the file; they are read only here, through the
`env` mapping passed in (so tests pass their own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from duplex.orchestrator.protocol import ProtocolLimits
from duplex.registry.records import PriorityRule, RoutingSettings, Strategy


class ConfigError(ValueError):
    """The configuration file or an environment override is invalid."""


@dataclass(frozen=True)
class WebSocketConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    max_connections: int = 20
    max_message_bytes: int = 65536
    idle_timeout_s: float = 60.0


@dataclass(frozen=True)
class WebRtcConfig:
    """WebRTC sessions (aiortc): signalling on the orchestrator's HTTP port."""

    enabled: bool = True
    # Addresses offered as ICE host candidates; empty: every interface aioice finds.
    host_addresses: tuple[str, ...] = ()
    # stun:/turn: URLs; none by default (a LAN needs none and nothing leaves the network).
    ice_servers: tuple[str, ...] = ()
    ice_username: str = ""
    ice_credential: str = ""
    # A peer not connected within this long is closed.
    connect_timeout_s: float = 15.0


@dataclass(frozen=True)
class TransportConfig:
    type: str = "websocket"
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)


@dataclass(frozen=True)
class RedisConfig:
    url: str = "redis://localhost:6379"
    reconcile_interval_ms: int = 1000
    worker_ttl_ms: int = 15000


@dataclass(frozen=True)
class VadConfig:
    """Voice activity detection on client mic audio (the guide's keys, plus the engine)."""

    aggressiveness: int = 2
    min_speech_duration_ms: int = 100
    min_silence_duration_ms: int = 300
    engine: str = "webrtc"  # webrtc | silero (noise-robust)
    silero_threshold: float = 0.5


@dataclass(frozen=True)
class BargeInConfig:
    """What speech over the system's voice does; a session's SessionStart.barge_in overrides."""

    enabled: bool = True
    policy: str = "stop"  # stop | resume
    fade_ms: int = 10  # the last frame sent fades to zero over this long (no click)
    false_interruption_ms: int = 1500  # resume: speech this short (and no words) resumes


@dataclass(frozen=True)
class TlsConfig:
    """HTTPS/WSS on a second port (browsers give the microphone only to secure pages)."""

    port: int = 8443
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class AsrConfig:
    """The optional spoken loop: finished user utterances transcribed (Whisper tiny.en)."""

    enabled: bool = False
    reply: str = "none"  # none | echo (speak the transcript back)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class AuthConfig:
    """Client API keys; required when the client APIs are bound to a non-loopback address."""

    api_keys: tuple[str, ...] = ()
    # Loopback clients need no key unless this is set (e.g. behind a reverse proxy on the
    # same host, where every client arrives from loopback).
    require_on_loopback: bool = False


@dataclass(frozen=True)
class SessionConfig:
    output_lead_ms: int = 60
    worker_lead_ms: int = 200
    max_text_chars: int = 5000
    # Text is forwarded to the worker once an utterance's first clause is this long (cut at a
    # word), so a long opening sentence streamed word by word starts speaking early (0: off).
    first_clause_max_chars: int = 40
    open_timeout_s: float = 5.0
    # A worker that sends nothing for this long while it owes audio is treated as failed.
    frame_timeout_s: float = 5.0
    max_failovers: int = 2
    allowed_sample_rates: tuple[int, ...] = (16000, 24000, 48000)
    max_reference_audio_bytes: int = 48000


@dataclass(frozen=True)
class OrchestratorConfig:
    """Everything `python -m duplex.orchestrator` needs."""

    transport: TransportConfig = field(default_factory=TransportConfig)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    redis: RedisConfig = field(default_factory=RedisConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

    def protocol_limits(self) -> ProtocolLimits:
        return ProtocolLimits(
            max_message_bytes=self.transport.websocket.max_message_bytes,
            max_text_chars=self.session.max_text_chars,
            allowed_sample_rates=self.session.allowed_sample_rates,
            max_reference_audio_bytes=self.session.max_reference_audio_bytes,
        )


# Environment variable -> (section path, key). Documented in .env.example.
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "REDIS_URL": ("redis", "url"),
        "DUPLEX_ORCH_HOST": ("transport.websocket", "host"),
        "DUPLEX_ORCH_PORT": ("transport.websocket", "port"),
        "DUPLEX_MAX_CONNECTIONS": ("transport.websocket", "max_connections"),
        "DUPLEX_ORCH_MAX_MESSAGE_BYTES": ("transport.websocket", "max_message_bytes"),
        "DUPLEX_ORCH_IDLE_TIMEOUT_S": ("transport.websocket", "idle_timeout_s"),
        "DUPLEX_ROUTING_STRATEGY": ("routing", "load_balancing_strategy"),
        "DUPLEX_WORKER_TTL_MS": ("redis", "worker_ttl_ms"),
        "WEBRTC_HOST_ADDRESSES": ("transport.webrtc", "host_addresses"),
        "WEBRTC_ICE_SERVERS": ("transport.webrtc", "ice_servers"),
        "DUPLEX_VAD_ENGINE": ("vad", "engine"),
        "DUPLEX_BARGE_IN_POLICY": ("barge_in", "policy"),
        "DUPLEX_TLS_PORT": ("tls", "port"),
        "DUPLEX_TLS_CERT_FILE": ("tls", "cert_file"),
        "DUPLEX_TLS_KEY_FILE": ("tls", "key_file"),
        "DUPLEX_ASR_ENABLED": ("asr", "enabled"),
        "API_KEYS": ("auth", "api_keys"),
    }
)

_BASE64_JSON_OVERHEAD = 1024  # room for the rest of a SessionStart around reference_audio


def load_orchestrator_config(path: Path | None, env: Mapping[str, str]) -> OrchestratorConfig:
    """Read `path` (None: defaults only), apply env overrides, validate; raises ConfigError."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        raw = loaded or {}
    for var, (section, key) in ENV_OVERRIDES.items():
        # An empty variable means "not set" (as in .env.example), never an empty value.
        if env.get(var, "").strip():
            node = raw
            for part in section.split("."):
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                elif not isinstance(child, dict):
                    raise ConfigError(f"{section}: must be a mapping")
                node = child
            node[key] = _EnvValue(var, env[var])
    config = _build(raw)
    _validate(config)
    return config


@dataclass(frozen=True)
class _EnvValue:
    """A string from the environment, converted to the key's type with the variable named."""

    var: str
    text: str


_T = TypeVar("_T")


def _build(raw: Mapping[str, Any]) -> OrchestratorConfig:
    sections = {"transport", "routing", "redis", "vad", "session", "barge_in", "tls", "asr", "auth"}
    _reject_unknown(raw, "", sections)
    transport_raw = _section(raw, "transport")
    _reject_unknown(transport_raw, "transport", {"type", "websocket", "webrtc"})
    transport = TransportConfig(
        type=_value(transport_raw, "transport", "type", str, "websocket"),
        websocket=_dataclass(WebSocketConfig, _section(transport_raw, "websocket"), "transport."),
        webrtc=_dataclass(WebRtcConfig, _section(transport_raw, "webrtc"), "transport."),
    )
    return OrchestratorConfig(
        transport=transport,
        routing=_routing(_section(raw, "routing")),
        redis=_dataclass(RedisConfig, _section(raw, "redis"), ""),
        vad=_dataclass(VadConfig, _section(raw, "vad"), ""),
        session=_dataclass(SessionConfig, _section(raw, "session"), ""),
        barge_in=_section_of(BargeInConfig, raw, "barge_in"),
        tls=_section_of(TlsConfig, raw, "tls"),
        asr=_section_of(AsrConfig, raw, "asr"),
        auth=_section_of(AuthConfig, raw, "auth"),
    )


def _section_of(cls: type[_T], raw: Mapping[str, Any], name: str) -> _T:
    return _dataclass(cls, _section(raw, name), "", name=name)


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a mapping")
    return value


def _reject_unknown(raw: Mapping[str, Any], where: str, known: set[str]) -> None:
    for key in raw:
        if key not in known:
            prefix = f"{where}." if where else ""
            raise ConfigError(
                f"unknown key {prefix}{key}; known keys here: {', '.join(sorted(known))}"
            )


def _dataclass(cls: type[_T], raw: Mapping[str, Any], prefix: str, name: str = "") -> _T:
    name = prefix + (name or cls.__name__.removesuffix("Config").lower())
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    _reject_unknown(raw, name, set(known))
    default = cls()
    values: dict[str, Any] = {}
    for key in raw:
        current = getattr(default, key)
        kind: type[Any] = type(current)
        if isinstance(current, tuple):
            item = next((f.type for f in fields(cls) if f.name == key), "")  # type: ignore[arg-type]
            if "str" in str(item):
                values[key] = _str_tuple(raw[key], f"{name}.{key}")
            else:
                values[key] = _int_tuple(raw[key], f"{name}.{key}")
        else:
            values[key] = _value(raw, name, key, kind, current)
    return replace(default, **values)  # type: ignore[type-var]


def _value(raw: Mapping[str, Any], where: str, key: str, kind: type[_T], default: _T) -> _T:
    if key not in raw or raw[key] is None:
        return default
    value = raw[key]
    label = f"{where}.{key}"
    if isinstance(value, _EnvValue):
        return _from_env(value, kind, label)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{label}: expected an integer, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{label}: expected {_type_name(kind)}, got {value!r}")
    return value


def _env_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _from_env(value: _EnvValue, kind: type[_T], label: str) -> _T:
    converters: dict[type[Any], Callable[[str], Any]] = {
        str: str,
        int: int,
        float: float,
        bool: _env_bool,
    }
    try:
        return converters[kind](value.text.strip())  # type: ignore[no-any-return]
    except (ValueError, KeyError):
        raise ConfigError(
            f"{value.var}={value.text!r} (for {label}): expected {_type_name(kind)}"
        ) from None


def _type_name(kind: type[Any]) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, kind.__name__
    )


def _str_tuple(value: Any, label: str) -> tuple[str, ...]:
    if isinstance(value, _EnvValue):
        return tuple(part.strip() for part in value.text.split(",") if part.strip())
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{label}: expected a list of strings, got {value!r}")
    return tuple(value)


def _int_tuple(value: Any, label: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ConfigError(f"{label}: expected a list of integers, got {value!r}")
    return tuple(value)


def _routing(raw: Mapping[str, Any]) -> RoutingSettings:
    known = {
        "prefer_resident_models",
        "load_balancing_strategy",
        "resident_weight",
        "required_capabilities",
        "worker_priority",
        "overflow_threshold",
    }
    _reject_unknown(raw, "routing", known)
    default = RoutingSettings()
    name = _value(raw, "routing", "load_balancing_strategy", str, default.strategy.value)
    try:
        strategy = Strategy(name)
    except ValueError:
        allowed = ", ".join(s.value for s in Strategy)
        raise ConfigError(
            f"routing.load_balancing_strategy: unknown strategy {name!r}; use one of: {allowed}"
        ) from None
    required = raw.get("required_capabilities") or []
    if not isinstance(required, list) or not all(isinstance(c, str) for c in required):
        raise ConfigError(
            f"routing.required_capabilities: expected a list of strings, got {required!r}"
        )
    return RoutingSettings(
        strategy=strategy,
        prefer_resident_models=_value(
            raw, "routing", "prefer_resident_models", bool, default.prefer_resident_models
        ),
        resident_weight=_value(raw, "routing", "resident_weight", float, default.resident_weight),
        required_capabilities=tuple(required),
        worker_priority=_priority_rules(raw.get("worker_priority") or []),
        overflow_threshold=_value(
            raw, "routing", "overflow_threshold", int, default.overflow_threshold
        ),
    )


def _priority_rules(value: Any) -> tuple[PriorityRule, ...]:
    label = "routing.worker_priority"
    if not isinstance(value, list):
        raise ConfigError(f"{label}: expected a list of {{adapter_type, priority}}")
    rules = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConfigError(f"{label}[{i}]: expected a mapping with adapter_type and priority")
        _reject_unknown(item, f"{label}[{i}]", {"adapter_type", "priority"})
        adapter = item.get("adapter_type")
        priority = item.get("priority")
        if not isinstance(adapter, str) or not adapter:
            raise ConfigError(f"{label}[{i}].adapter_type: expected a non-empty string")
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 1:
            raise ConfigError(f"{label}[{i}].priority: expected an integer >= 1")
        rules.append(PriorityRule(adapter_type=adapter, priority=priority))
    return tuple(rules)


def _validate(config: OrchestratorConfig) -> None:
    ws = config.transport.websocket
    s = config.session
    checks: list[tuple[bool, str]] = [
        (config.transport.type == "websocket", "transport.type: only 'websocket' is supported"),
        (0 <= ws.port <= 65535, "transport.websocket.port: must be within 0..65535"),
        (ws.max_connections >= 1, "transport.websocket.max_connections: must be >= 1"),
        (ws.max_message_bytes >= 1024, "transport.websocket.max_message_bytes: must be >= 1024"),
        (ws.idle_timeout_s > 0, "transport.websocket.idle_timeout_s: must be > 0"),
        (
            config.redis.url.startswith(("redis://", "rediss://", "unix://")),
            "redis.url: must start with redis://, rediss:// or unix://",
        ),
        (config.redis.reconcile_interval_ms > 0, "redis.reconcile_interval_ms: must be > 0"),
        (config.redis.worker_ttl_ms > 0, "redis.worker_ttl_ms: must be > 0"),
        (0 <= config.vad.aggressiveness <= 3, "vad.aggressiveness: must be within 0..3"),
        (config.vad.engine in ("webrtc", "silero"), "vad.engine: must be webrtc or silero"),
        (0 < config.vad.silero_threshold < 1, "vad.silero_threshold: must be within (0, 1)"),
        (
            config.vad.min_speech_duration_ms >= 20 and config.vad.min_silence_duration_ms >= 20,
            "vad: min_speech_duration_ms and min_silence_duration_ms must be >= 20",
        ),
        (config.barge_in.policy in ("stop", "resume"), "barge_in.policy: must be stop or resume"),
        (0 <= config.barge_in.fade_ms <= 20, "barge_in.fade_ms: must be within 0..20"),
        (config.barge_in.false_interruption_ms >= 0, "barge_in.false_interruption_ms: >= 0"),
        (config.transport.webrtc.connect_timeout_s > 0, "transport.webrtc.connect_timeout_s: > 0"),
        (0 <= config.tls.port <= 65535, "tls.port: must be within 0..65535"),
        (
            bool(config.tls.cert_file) == bool(config.tls.key_file),
            "tls: cert_file and key_file go together",
        ),
        (config.asr.reply in ("none", "echo"), "asr.reply: must be none or echo"),
        (config.asr.timeout_s > 0, "asr.timeout_s: must be > 0"),
        (config.routing.resident_weight >= 0, "routing.resident_weight: must be >= 0"),
        (config.routing.overflow_threshold >= 0, "routing.overflow_threshold: must be >= 0"),
        (s.output_lead_ms >= 0 and s.worker_lead_ms >= 0, "session: lead times must be >= 0"),
        (s.max_text_chars >= 1, "session.max_text_chars: must be >= 1"),
        (s.open_timeout_s > 0 and s.frame_timeout_s > 0, "session: timeouts must be > 0"),
        (s.max_failovers >= 0, "session.max_failovers: must be >= 0"),
        (s.first_clause_max_chars >= 0, "session.first_clause_max_chars: must be >= 0"),
        (
            bool(s.allowed_sample_rates) and all(r > 0 for r in s.allowed_sample_rates),
            "session.allowed_sample_rates: must be a non-empty list of positive rates",
        ),
        (s.max_reference_audio_bytes >= 0, "session.max_reference_audio_bytes: must be >= 0"),
        (
            4 * ((s.max_reference_audio_bytes + 2) // 3) + _BASE64_JSON_OVERHEAD
            <= ws.max_message_bytes,
            "session.max_reference_audio_bytes: its base64 form must fit within "
            "transport.websocket.max_message_bytes (raise both together)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
