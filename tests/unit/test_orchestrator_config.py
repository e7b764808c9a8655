"""Orchestrator config: the guide's YAML, defaults, env overrides and clear rejections."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from duplex.orchestrator.config import (
    ENV_OVERRIDES,
    ConfigError,
    OrchestratorConfig,
    load_orchestrator_config,
)
from duplex.orchestrator.protocol import ProtocolLimits
from duplex.registry.records import PriorityRule, RoutingSettings, Strategy

REPO = Path(__file__).resolve().parents[2]

GUIDE_YAML = """
transport:
  type: "websocket"
  websocket:
    host: "0.0.0.0"
    port: 8080
    max_connections: 20  # Increased for multi-GPU capacity

routing:
  # M9+ feature: discover workers via Redis
  prefer_resident_models: true
  load_balancing_strategy: "least_loaded"

redis:
  url: "redis://localhost:6379"

vad:
  aggressiveness: 2
  min_speech_duration_ms: 100
  min_silence_duration_ms: 300
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orchestrator.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_guide_orchestrator_yaml_loads_unchanged(tmp_path: Path) -> None:
    """The deployment guide's orchestrator.yaml, verbatim, gives the expected values."""
    config = load_orchestrator_config(write(tmp_path, GUIDE_YAML), {})
    assert config.transport.type == "websocket"
    assert config.transport.websocket.port == 8080
    assert config.transport.websocket.max_connections == 20
    assert config.routing.strategy is Strategy.LEAST_LOADED
    assert config.routing.prefer_resident_models is True
    assert config.redis.url == "redis://localhost:6379"
    assert config.vad.min_silence_duration_ms == 300


def test_repo_config_file_loads_with_least_loaded_on_8080() -> None:
    """config/orchestrator.yaml loads: least_loaded, port 8080, local Redis."""
    config = load_orchestrator_config(REPO / "config" / "orchestrator.yaml", {})
    assert config.routing.strategy is Strategy.LEAST_LOADED
    assert config.transport.websocket.port == 8080
    assert config.redis.url == "redis://localhost:6379"
    assert config == OrchestratorConfig()


def test_no_file_gives_defaults() -> None:
    """With no file and no env, every value is the documented default."""
    assert load_orchestrator_config(None, {}) == OrchestratorConfig()


def test_every_routing_key_of_the_guide_is_read(tmp_path: Path) -> None:
    """All the guide's routing keys (priority rules included) reach RoutingSettings."""
    path = write(
        tmp_path,
        """
        routing:
          load_balancing_strategy: "priority"
          prefer_resident_models: false
          resident_weight: 0.5
          required_capabilities: ["streaming", "zero_shot"]
          worker_priority:
            - adapter_type: "cosyvoice2"
              priority: 1
            - adapter_type: "piper"
              priority: 2
          overflow_threshold: 7
        """,
    )
    assert load_orchestrator_config(path, {}).routing == RoutingSettings(
        strategy=Strategy.PRIORITY,
        prefer_resident_models=False,
        resident_weight=0.5,
        required_capabilities=("streaming", "zero_shot"),
        worker_priority=(PriorityRule("cosyvoice2", 1), PriorityRule("piper", 2)),
        overflow_threshold=7,
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("transprt: {}", "transprt"),
        ("transport: {websocket: {prot: 1}}", "transport.websocket.prot"),
        ("routing: {strategy: round_robin}", "routing.strategy"),
        ("redis: {host: x}", "redis.host"),
        ("routing: {worker_priority: [{adapter: piper, priority: 1}]}", "adapter"),
        ("session: {lead_ms: 3}", "session.lead_ms"),
    ],
)
def test_unknown_key_is_rejected_naming_it(tmp_path: Path, text: str, key: str) -> None:
    """A misspelled key fails loading with the key in the message."""
    with pytest.raises(ConfigError, match="unknown key") as info:
        load_orchestrator_config(write(tmp_path, text), {})
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("transport: {websocket: {port: '8080'}}", "transport.websocket.port"),
        ("transport: {websocket: {port: 70000}}", "transport.websocket.port"),
        ("transport: {websocket: {max_connections: 0}}", "max_connections"),
        ("transport: {type: webrtc}", "transport.type"),
        ("routing: {load_balancing_strategy: fastest}", "least_loaded"),
        ("routing: {prefer_resident_models: 1}", "prefer_resident_models"),
        ("routing: {worker_priority: [{adapter_type: piper, priority: 0}]}", "priority"),
        ("vad: {aggressiveness: 5}", "vad.aggressiveness"),
        ("session: {allowed_sample_rates: [16000, '8k']}", "allowed_sample_rates"),
        ("redis: {url: localhost:6379}", "redis.url"),
        ("session: {max_reference_audio_bytes: 3000000}", "max_message_bytes"),
        ("- a\n- b", "mapping"),
        ("transport: [1]", "transport"),
    ],
)
def test_invalid_value_is_rejected_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    """An ill-typed or out-of-range value fails loading with a message naming it."""
    with pytest.raises(ConfigError) as info:
        load_orchestrator_config(write(tmp_path, text), {})
    assert needle in str(info.value)


def test_missing_file_and_bad_yaml_raise_config_error(tmp_path: Path) -> None:
    """A missing file or broken YAML is a ConfigError, not a raw OSError/YAMLError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_orchestrator_config(tmp_path / "nope.yaml", {})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_orchestrator_config(write(tmp_path, "transport: [unclosed"), {})


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    """Each documented environment variable overrides its key, typed."""
    env = {
        "REDIS_URL": "redis://127.0.0.1:7777/2",
        "DUPLEX_ORCH_HOST": "127.0.0.1",
        "DUPLEX_ORCH_PORT": "0",
        "DUPLEX_MAX_CONNECTIONS": "3",
        "DUPLEX_ORCH_MAX_MESSAGE_BYTES": "4194304",
        "DUPLEX_ORCH_IDLE_TIMEOUT_S": "2.5",
        "DUPLEX_ROUTING_STRATEGY": "round_robin",
        "DUPLEX_WORKER_TTL_MS": "3000",
        "WEBRTC_HOST_ADDRESSES": "127.0.0.1, 10.0.0.5",
        "WEBRTC_ICE_SERVERS": "stun:stun.example.org:3478",
        "DUPLEX_VAD_ENGINE": "silero",
        "DUPLEX_BARGE_IN_POLICY": "resume",
        "DUPLEX_TLS_PORT": "9443",
        "DUPLEX_TLS_CERT_FILE": "/etc/duplex/cert.pem",
        "DUPLEX_TLS_KEY_FILE": "/etc/duplex/key.pem",
        "DUPLEX_ASR_ENABLED": "true",
        "API_KEYS": "k1,k2",
    }
    assert set(env) == set(ENV_OVERRIDES)
    config = load_orchestrator_config(write(tmp_path, GUIDE_YAML), env)
    ws = config.transport.websocket
    assert (ws.host, ws.port, ws.max_connections) == ("127.0.0.1", 0, 3)
    assert (ws.max_message_bytes, ws.idle_timeout_s) == (4194304, 2.5)
    assert config.redis.url == "redis://127.0.0.1:7777/2"
    assert config.redis.worker_ttl_ms == 3000
    assert config.routing.strategy is Strategy.ROUND_ROBIN
    assert config.routing.prefer_resident_models is True  # untouched keys keep the file's value
    assert config.transport.webrtc.host_addresses == ("127.0.0.1", "10.0.0.5")
    assert config.transport.webrtc.ice_servers == ("stun:stun.example.org:3478",)
    assert (config.vad.engine, config.barge_in.policy) == ("silero", "resume")
    assert (config.tls.port, config.tls.cert_file) == (9443, "/etc/duplex/cert.pem")
    assert config.asr.enabled is True
    assert config.auth.api_keys == ("k1", "k2")


def test_bad_env_value_names_the_variable() -> None:
    """An env override that does not convert fails naming the variable."""
    with pytest.raises(ConfigError, match="DUPLEX_ORCH_PORT"):
        load_orchestrator_config(None, {"DUPLEX_ORCH_PORT": "eighty"})
    with pytest.raises(ConfigError, match="round_robin"):
        load_orchestrator_config(None, {"DUPLEX_ROUTING_STRATEGY": "random"})


def test_unrelated_or_empty_env_is_ignored() -> None:
    """Variables that are not overrides, or are set but empty, change nothing."""
    env = {"PATH": "/bin", "DUPLEX_X": "1", "DUPLEX_ORCH_PORT": "", "REDIS_URL": " "}
    assert load_orchestrator_config(None, env) == OrchestratorConfig()


def test_protocol_limits_come_from_websocket_and_session_sections(tmp_path: Path) -> None:
    """protocol_limits() carries the message size, text length, rates and audio cap."""
    path = write(
        tmp_path,
        """
        transport: {websocket: {max_message_bytes: 200000}}
        session:
          max_text_chars: 99
          allowed_sample_rates: [24000]
          max_reference_audio_bytes: 100000
        """,
    )
    assert load_orchestrator_config(path, {}).protocol_limits() == ProtocolLimits(
        max_message_bytes=200000,
        max_text_chars=99,
        allowed_sample_rates=(24000,),
        max_reference_audio_bytes=100000,
    )
