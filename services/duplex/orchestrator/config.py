"""The orchestrator's configuration: the deployment guide's `orchestrator.yaml`, then env overrides.

```yaml
transport:  {type, websocket: {host, port, max_connections, max_message_bytes, idle_timeout_s,
                               max_client_backlog_ms},
             webrtc: {enabled, host_addresses, ice_servers, ice_username, ice_credential,
                      connect_timeout_s}}
routing:    {load_balancing_strategy, prefer_resident_models, resident_weight,
             required_capabilities, worker_priority: [{adapter_type, priority}],
             overflow_threshold}                                  (-> RoutingSettings)
redis:      {url, reconcile_interval_ms, worker_ttl_ms}
vad:        {aggressiveness, min_speech_duration_ms, min_silence_duration_ms, engine,
             silero_threshold}
session:    {output_lead_ms, worker_lead_ms, max_text_chars, first_clause_max_chars,
             open_timeout_s, frame_timeout_s, max_failovers, allowed_sample_rates,
             max_reference_audio_bytes}
barge_in:   {enabled, policy, fade_ms, false_interruption_ms}
tls:        {port, cert_file, key_file}
asr:        {enabled, reply, timeout_s}
auth:       {api_keys, require_on_loopback}
openai:     {default_voice}
wyoming:    {enabled, host, port}
```

The loading itself is :mod:`duplex.configfile` (shared with the worker): unknown keys and
wrongly typed values are errors naming the key, so a typo never falls back to a default.
Each section checks its own ranges; :func:`_validate` holds the checks that span sections.
Environment variables are read only here, through the `env` mapping passed in (tests pass
their own); every override is listed in :data:`ENV_OVERRIDES` (the source of `.env.example`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from duplex.configfile import ConfigError as ConfigError
from duplex.configfile import apply_env, build_section, read_yaml
from duplex.orchestrator.protocol import ProtocolLimits
from duplex.registry._connect import check_redis_url
from duplex.registry.records import PriorityRule, RoutingSettings, Strategy

_BASE64_JSON_OVERHEAD = 1024  # room for the rest of a SessionStart around reference_audio


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class WebSocketConfig:
    """The WebSocket API and the HTTP port it shares (pages, signalling, health)."""

    host: str = "0.0.0.0"
    port: int = 8080
    max_connections: int = 20
    # 2 MiB: a SessionStart carrying the default reference_audio cap, base64-encoded.
    max_message_bytes: int = 2_097_152
    idle_timeout_s: float = 60.0
    # Audio queued toward a client (user space + kernel) beyond which, held for a grace
    # period, the client is taken as not reading and closed (1008); 0 turns the check off.
    max_client_backlog_ms: int = 3000

    def __post_init__(self) -> None:
        _require(0 <= self.port <= 65535, "transport.websocket.port must be within 0..65535")
        _require(self.max_connections >= 1, "transport.websocket.max_connections must be >= 1")
        _require(
            self.max_message_bytes >= 1024,
            "transport.websocket.max_message_bytes must be >= 1024",
        )
        _require(self.idle_timeout_s > 0, "transport.websocket.idle_timeout_s must be > 0")
        _require(
            self.max_client_backlog_ms == 0 or self.max_client_backlog_ms >= 500,
            "transport.websocket.max_client_backlog_ms must be 0 (off) or >= 500",
        )


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

    def __post_init__(self) -> None:
        _require(self.connect_timeout_s > 0, "transport.webrtc.connect_timeout_s must be > 0")
        for url in self.ice_servers:
            _require(
                url.startswith(("stun:", "turn:", "turns:")),
                f"transport.webrtc.ice_servers: {url!r} must start with stun:, turn: or turns:",
            )


@dataclass(frozen=True)
class TransportConfig:
    """The client-facing transports: the WebSocket API (the guide's `type`) and WebRTC."""

    type: str = "websocket"
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)

    def __post_init__(self) -> None:
        # The guide's key names the primary transport; WebRTC rides beside it (its own section).
        _require(
            self.type == "websocket",
            f"transport.type must be 'websocket' (WebRTC is set under transport.webrtc), "
            f"got {self.type!r}",
        )


@dataclass(frozen=True)
class RedisConfig:
    """Where workers are discovered, and how often the full set is re-read."""

    url: str = "redis://localhost:6379"
    reconcile_interval_ms: int = 1000
    worker_ttl_ms: int = 15000
    # This orchestrator's sessions and in-flight counts go to `orchestrator:{id}` this often
    # (for the console); the hash expires after three intervals without a refresh.
    publish_interval_ms: int = 1000

    def __post_init__(self) -> None:
        problem = check_redis_url(self.url)
        _require(problem is None, problem or "")
        _require(self.reconcile_interval_ms > 0, "redis.reconcile_interval_ms must be > 0")
        _require(self.worker_ttl_ms > 0, "redis.worker_ttl_ms must be > 0")
        _require(self.publish_interval_ms > 0, "redis.publish_interval_ms must be > 0")


@dataclass(frozen=True)
class VadConfig:
    """Voice activity detection on client mic audio (the guide's keys, plus the engine)."""

    aggressiveness: int = 2
    min_speech_duration_ms: int = 100
    min_silence_duration_ms: int = 300
    engine: str = "webrtc"  # webrtc | silero (noise-robust)
    silero_threshold: float = 0.5

    def __post_init__(self) -> None:
        _require(0 <= self.aggressiveness <= 3, "vad.aggressiveness must be within 0..3")
        _require(
            self.min_speech_duration_ms >= 20 and self.min_silence_duration_ms >= 20,
            "vad.min_speech_duration_ms and vad.min_silence_duration_ms must be >= 20",
        )
        _require(
            self.engine in ("webrtc", "silero"),
            f"vad.engine must be 'webrtc' or 'silero', got {self.engine!r}",
        )
        _require(0 < self.silero_threshold < 1, "vad.silero_threshold must be within (0, 1)")


@dataclass(frozen=True)
class BargeInConfig:
    """What speech over the system's voice does; a session's SessionStart.barge_in overrides."""

    enabled: bool = True
    policy: str = "stop"  # stop | resume
    fade_ms: int = 10  # the last frame sent fades to zero over this long (no click)
    false_interruption_ms: int = 1500  # resume: speech this short (and no words) resumes

    def __post_init__(self) -> None:
        _require(
            self.policy in ("stop", "resume"),
            f"barge_in.policy must be 'stop' or 'resume', got {self.policy!r}",
        )
        _require(0 <= self.fade_ms <= 20, "barge_in.fade_ms must be within 0..20")
        _require(self.false_interruption_ms >= 0, "barge_in.false_interruption_ms must be >= 0")


@dataclass(frozen=True)
class TlsConfig:
    """HTTPS/WSS on a second port (browsers give the microphone only to secure pages)."""

    port: int = 8443
    cert_file: str = ""
    key_file: str = ""

    def __post_init__(self) -> None:
        _require(0 <= self.port <= 65535, "tls.port must be within 0..65535")
        _require(
            bool(self.cert_file) == bool(self.key_file),
            "tls.cert_file and tls.key_file go together: set both or neither",
        )


@dataclass(frozen=True)
class AsrConfig:
    """The optional spoken loop: finished user utterances transcribed (Whisper tiny.en)."""

    enabled: bool = False
    reply: str = "none"  # none | echo (speak the transcript back)
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _require(
            self.reply in ("none", "echo"),
            f"asr.reply must be 'none' or 'echo', got {self.reply!r}",
        )
        _require(self.timeout_s > 0, "asr.timeout_s must be > 0")


@dataclass(frozen=True)
class AuthConfig:
    """Client API keys; required when the client APIs are bound to a non-loopback address."""

    api_keys: tuple[str, ...] = ()
    # Loopback clients need no key unless this is set (e.g. behind a reverse proxy on the
    # same host, where every client arrives from loopback).
    require_on_loopback: bool = False


@dataclass(frozen=True)
class OpenAIConfig:
    """`/v1/audio/speech`: the fleet model that OpenAI's own model and voice names (`tts-1`,
    `alloy`, ...) stand for; empty: the first English model the fleet offers."""

    default_voice: str = ""


@dataclass(frozen=True)
class WyomingConfig:
    """A Wyoming TTS server (Home Assistant's protocol) over the fleet; off unless enabled.
    Wyoming has no authentication: bind it beyond loopback only on a trusted network."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 10200

    def __post_init__(self) -> None:
        _require(0 <= self.port <= 65535, "wyoming.port must be within 0..65535")


@dataclass(frozen=True)
class SessionConfig:
    """Per-session limits, lead times and failover."""

    # Audio sent to the client ahead of real time (PAUSE and barge-in cut within this).
    output_lead_ms: int = 60
    # How far ahead of real time the worker sends frames (the stream's lead_ms): the
    # orchestrator's own buffer, so that a slow frame does not starve the client.
    worker_lead_ms: int = 200
    max_text_chars: int = 5000
    # Text is forwarded to the worker once an utterance's first clause is this long (cut at a
    # word), so a long opening sentence streamed word by word starts speaking early (0: off).
    first_clause_max_chars: int = 28
    open_timeout_s: float = 5.0
    # A worker that sends nothing for this long while it owes audio is treated as failed.
    frame_timeout_s: float = 5.0
    max_failovers: int = 2
    allowed_sample_rates: tuple[int, ...] = (16000, 24000, 48000)
    # 1440 KiB of WAV: 30 s of 24 kHz 16-bit mono (what XTTS conditions on) plus header room.
    max_reference_audio_bytes: int = 1_474_560

    def __post_init__(self) -> None:
        _require(
            self.output_lead_ms >= 0 and self.worker_lead_ms >= 0,
            "session.output_lead_ms and session.worker_lead_ms must be >= 0",
        )
        _require(self.max_text_chars >= 1, "session.max_text_chars must be >= 1")
        _require(self.first_clause_max_chars >= 0, "session.first_clause_max_chars must be >= 0")
        _require(
            self.open_timeout_s > 0 and self.frame_timeout_s > 0,
            "session.open_timeout_s and session.frame_timeout_s must be > 0",
        )
        _require(self.max_failovers >= 0, "session.max_failovers must be >= 0")
        _require(
            bool(self.allowed_sample_rates) and all(r > 0 for r in self.allowed_sample_rates),
            "session.allowed_sample_rates must be a non-empty list of positive rates",
        )
        _require(
            self.max_reference_audio_bytes >= 0, "session.max_reference_audio_bytes must be >= 0"
        )


@dataclass(frozen=True)
class PriorityRuleSection:
    """One `routing.worker_priority` entry as written in the YAML file."""

    adapter_type: str
    priority: int  # 1 is tried first

    def __post_init__(self) -> None:
        # A ValueError (not ConfigError): the loader prefixes the entry's path, which only it
        # knows ("routing.worker_priority[1]").
        if not self.adapter_type.strip():
            raise ValueError("adapter_type must not be empty")
        if self.priority < 1:
            raise ValueError(f"priority must be an integer >= 1, got {self.priority}")


@dataclass(frozen=True)
class RoutingSection:
    """The `routing:` section as written in the YAML file (the guide's key names).

    The router works on :class:`RoutingSettings` (also what the console writes to Redis);
    :meth:`settings` converts.
    """

    load_balancing_strategy: Strategy = Strategy.LEAST_LOADED
    prefer_resident_models: bool = True
    resident_weight: float = 0.8
    required_capabilities: tuple[str, ...] = ()
    worker_priority: tuple[PriorityRuleSection, ...] = ()
    overflow_threshold: int = 5

    def __post_init__(self) -> None:
        _require(self.resident_weight >= 0, "routing.resident_weight must be >= 0")
        _require(self.overflow_threshold >= 0, "routing.overflow_threshold must be >= 0")

    def settings(self) -> RoutingSettings:
        return RoutingSettings(
            strategy=self.load_balancing_strategy,
            prefer_resident_models=self.prefer_resident_models,
            resident_weight=self.resident_weight,
            required_capabilities=self.required_capabilities,
            worker_priority=tuple(
                PriorityRule(adapter_type=r.adapter_type, priority=r.priority)
                for r in self.worker_priority
            ),
            overflow_threshold=self.overflow_threshold,
        )


@dataclass(frozen=True)
class OrchestratorConfig:
    """Everything `python -m duplex.orchestrator` needs."""

    transport: TransportConfig = field(default_factory=TransportConfig)
    # Read from the file as a RoutingSection (the guide's key names), then converted.
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    redis: RedisConfig = field(default_factory=RedisConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)

    def protocol_limits(self) -> ProtocolLimits:
        return ProtocolLimits(
            max_message_bytes=self.transport.websocket.max_message_bytes,
            max_text_chars=self.session.max_text_chars,
            allowed_sample_rates=self.session.allowed_sample_rates,
            max_reference_audio_bytes=self.session.max_reference_audio_bytes,
        )


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
"""Environment variable -> (section path, key). Lists are comma-separated; booleans are
true/false, 1/0, yes/no or on/off. Documented in `.env.example`."""


def load_orchestrator_config(path: Path | None, env: Mapping[str, str]) -> OrchestratorConfig:
    """Read `path` (None: defaults only), apply env overrides, validate; raises ConfigError."""
    raw = apply_env(read_yaml(path) if path is not None else {}, env, ENV_OVERRIDES)
    # routing: is read with the file's own schema; every other section is its dataclass.
    routing = build_section(RoutingSection, raw.pop("routing", None), "routing")
    config = replace(build_section(OrchestratorConfig, raw), routing=routing.settings())
    _validate(config)
    return config


def _validate(config: OrchestratorConfig) -> None:
    """Checks that span sections (each section checks its own values)."""
    ws = config.transport.websocket
    session = config.session
    # reference_audio travels base64-encoded inside one SessionStart message.
    encoded = 4 * ((session.max_reference_audio_bytes + 2) // 3) + _BASE64_JSON_OVERHEAD
    _require(
        encoded <= ws.max_message_bytes,
        "session.max_reference_audio_bytes: its base64 form must fit within "
        "transport.websocket.max_message_bytes (raise both together)",
    )
