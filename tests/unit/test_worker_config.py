"""The worker's YAML configuration and its environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from duplex.worker.config import (
    ENV_OVERRIDES,
    ConfigError,
    WorkerConfig,
    load_worker_config,
)

REPO = Path(__file__).resolve().parents[2]

GUIDE_YAML = """
worker:
  name: "tts-cosy@0"
  grpc_port: 7001
  adapter_type: "cosyvoice2"

model_manager:
  default_model_id: "cosyvoice2-en-base"
  preload_model_ids:
    - "cosyvoice2-en-base"
  resident_cap: 2

redis:
  url: "redis://localhost:6379"
  heartbeat_interval_ms: 5000
  worker_ttl_ms: 15000

audio:
  sample_rate: 48000
  frame_duration_ms: 20
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "worker.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_deployment_guides_worker_yaml_loads_unchanged(tmp_path: Path) -> None:
    """The guide's worker-gpu0.yaml is a valid config, with defaults for the rest."""
    config = load_worker_config(_write(tmp_path, GUIDE_YAML), {})
    assert config.worker.name == "tts-cosy@0"
    assert config.worker.grpc_port == 7001
    assert config.worker.adapter_type == "cosyvoice2"
    assert config.model_manager.default_model_id == "cosyvoice2-en-base"
    assert config.model_manager.preload_model_ids == ("cosyvoice2-en-base",)
    assert config.model_manager.resident_cap == 2
    assert config.redis.url == "redis://localhost:6379"
    assert config.redis.heartbeat_interval_ms == 5000
    assert config.redis.worker_ttl_ms == 15000
    assert config.audio.sample_rate == 48000
    assert config.audio.frame_duration_ms == 20
    assert config.worker.host == "127.0.0.1"
    assert config.worker.advertise_host == "localhost"
    assert config.worker.output_lead_ms == 100
    assert config.worker.onnx_threads == 1


@pytest.mark.parametrize("name", ["worker-gpu0", "worker-gpu1", "worker-cpu", "worker-ja"])
def test_every_example_config_in_the_repository_is_valid(name: str) -> None:
    """config/worker-*.yaml load without error and name distinct ports."""
    config = load_worker_config(REPO / "config" / f"{name}.yaml", {})
    assert isinstance(config, WorkerConfig)
    assert config.worker.grpc_port > 0


def test_example_configs_use_distinct_names_and_ports() -> None:
    """Two workers started from the examples never collide in Redis or on a port."""
    configs = [load_worker_config(p, {}) for p in sorted((REPO / "config").glob("worker-*.yaml"))]
    assert len({c.worker.name for c in configs}) == len(configs)
    assert len({c.worker.grpc_port for c in configs}) == len(configs)
    assert len({c.worker.metrics_port for c in configs}) == len(configs)


@pytest.mark.parametrize("folder", ["config", "config/demo"])
def test_shipped_worker_files_give_each_worker_its_own_metrics_port(folder: str) -> None:
    """Every worker file serves /metrics on loopback at a fixed port from 9101, none shared."""
    paths = sorted((REPO / folder).glob("worker-*.yaml"))
    configs = [load_worker_config(p, {}) for p in paths]
    ports = sorted(c.worker.metrics_port for c in configs)
    assert ports == list(range(9101, 9101 + len(configs)))
    assert {c.worker.metrics_host for c in configs} == {"127.0.0.1"}
    assert {c.gpu.sample_interval_ms for c in configs} == {1000}


def test_metrics_and_gpu_keys_default_to_a_free_loopback_port_and_one_second(
    tmp_path: Path,
) -> None:
    """The guide's YAML, which has no metrics keys, gets a free port on 127.0.0.1 and 1 s
    GPU sampling, so several such workers on one host never clash."""
    config = load_worker_config(_write(tmp_path, GUIDE_YAML), {})
    assert config.worker.metrics_port == 0 and config.worker.metrics_enabled
    assert config.worker.metrics_host == "127.0.0.1"
    assert config.gpu.sample_interval_ms == 1000


def test_metrics_port_minus_one_turns_metrics_off(tmp_path: Path) -> None:
    """-1 (here from the environment) means no /metrics server."""
    config = load_worker_config(_write(tmp_path, GUIDE_YAML), {"DUPLEX_WORKER_METRICS_PORT": "-1"})
    assert config.worker.metrics_port == -1 and not config.worker.metrics_enabled


def test_metrics_and_gpu_overrides_come_from_the_environment(tmp_path: Path) -> None:
    """DUPLEX_WORKER_METRICS_PORT / _HOST and DUPLEX_GPU_SAMPLE_INTERVAL_MS replace the file."""
    env = {
        "DUPLEX_WORKER_METRICS_PORT": "9200",
        "DUPLEX_WORKER_METRICS_HOST": "0.0.0.0",
        "DUPLEX_GPU_SAMPLE_INTERVAL_MS": "250",
    }
    config = load_worker_config(_write(tmp_path, GUIDE_YAML), env)
    assert (config.worker.metrics_port, config.worker.metrics_host) == (9200, "0.0.0.0")
    assert config.gpu.sample_interval_ms == 250


def test_an_unknown_key_is_rejected_naming_it(tmp_path: Path) -> None:
    """A typo in a key fails with the full key name instead of being ignored."""
    text = GUIDE_YAML.replace("resident_cap: 2", "resident_capp: 2")
    with pytest.raises(ConfigError, match=r"model_manager\.resident_capp"):
        load_worker_config(_write(tmp_path, text), {})


def test_an_unknown_section_is_rejected_naming_it(tmp_path: Path) -> None:
    """A section the worker does not know is an error, not silently ignored."""
    with pytest.raises(ConfigError, match="'transport'"):
        load_worker_config(_write(tmp_path, GUIDE_YAML + "transport:\n  type: x\n"), {})


def test_a_wrongly_typed_value_is_rejected_naming_the_key(tmp_path: Path) -> None:
    """grpc_port: "seven" names worker.grpc_port and the expected type."""
    text = GUIDE_YAML.replace("grpc_port: 7001", 'grpc_port: "seven"')
    with pytest.raises(ConfigError, match=r"worker\.grpc_port must be of type integer"):
        load_worker_config(_write(tmp_path, text), {})


def test_a_boolean_is_not_accepted_as_an_integer(tmp_path: Path) -> None:
    """YAML `true` for resident_cap is a type error, not 1."""
    text = GUIDE_YAML.replace("resident_cap: 2", "resident_cap: true")
    with pytest.raises(ConfigError, match=r"model_manager\.resident_cap"):
        load_worker_config(_write(tmp_path, text), {})


def test_a_missing_required_key_is_named(tmp_path: Path) -> None:
    """Without worker.name the error says which key is missing."""
    text = GUIDE_YAML.replace('  name: "tts-cosy@0"\n', "")
    with pytest.raises(ConfigError, match=r"missing required key worker\.name"):
        load_worker_config(_write(tmp_path, text), {})


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("sample_rate: 48000", "sample_rate: 11025", "audio.sample_rate"),
        ("frame_duration_ms: 20", "frame_duration_ms: 30", "audio.frame_duration_ms"),
        ("worker_ttl_ms: 15000", "worker_ttl_ms: 4000", "worker_ttl_ms must be greater"),
        ("resident_cap: 2", "resident_cap: 0", "resident_cap must be >= 1"),
        ("grpc_port: 7001", "grpc_port: 70000", "grpc_port must be in"),
        ('url: "redis://localhost:6379"', 'url: "localhost:6379"', "redis.url"),
        ("grpc_port: 7001", "grpc_port: 7001\n  metrics_port: -2", "worker.metrics_port"),
        ("grpc_port: 7001", "grpc_port: 7001\n  metrics_port: 65536", "worker.metrics_port"),
        ("grpc_port: 7001", 'grpc_port: 7001\n  metrics_host: " "', "worker.metrics_host"),
        (
            "frame_duration_ms: 20",
            "frame_duration_ms: 20\ngpu:\n  sample_interval_ms: 10",
            "gpu.sample_interval_ms",
        ),
    ],
)
def test_out_of_range_values_are_rejected(tmp_path: Path, old: str, new: str, message: str) -> None:
    """Values that cannot work fail at load time with the key in the message."""
    with pytest.raises(ConfigError, match=message):
        load_worker_config(_write(tmp_path, GUIDE_YAML.replace(old, new)), {})


def test_environment_overrides_win_over_the_file(tmp_path: Path) -> None:
    """Each documented variable replaces its key, with the key's type."""
    env = {
        "DUPLEX_WORKER_NAME": "tts-x@3",
        "DUPLEX_WORKER_GRPC_PORT": "7100",
        "DUPLEX_WORKER_ADVERTISE_HOST": "gpu-box-3",
        "DUPLEX_DEFAULT_MODEL_ID": "tone-fast",
        "DUPLEX_PRELOAD_MODEL_IDS": "tone-fast, tone-rt02",
        "REDIS_URL": "redis://10.0.0.5:6380/1",
        "DUPLEX_OUTPUT_LEAD_MS": "0",
        "DUPLEX_USE_CUDA": "false",
        "DUPLEX_DRAIN_GRACE_S": "2.5",
        "DUPLEX_WORKER_TTL_MS": "30000",
    }
    config = load_worker_config(_write(tmp_path, GUIDE_YAML), env)
    assert config.worker.name == "tts-x@3"
    assert config.worker.grpc_port == 7100
    assert config.worker.advertise_host == "gpu-box-3"
    assert config.model_manager.default_model_id == "tone-fast"
    assert config.model_manager.preload_model_ids == ("tone-fast", "tone-rt02")
    assert config.redis.url == "redis://10.0.0.5:6380/1"
    assert config.worker.output_lead_ms == 0
    assert config.worker.use_cuda is False
    assert config.worker.drain_grace_s == 2.5
    assert config.redis.worker_ttl_ms == 30000


def test_an_empty_environment_variable_does_not_override(tmp_path: Path) -> None:
    """`REDIS_URL=` in a .env file keeps the file's value."""
    config = load_worker_config(_write(tmp_path, GUIDE_YAML), {"REDIS_URL": ""})
    assert config.redis.url == "redis://localhost:6379"


def test_a_malformed_override_names_the_variable(tmp_path: Path) -> None:
    """DUPLEX_WORKER_GRPC_PORT=abc fails naming the variable."""
    with pytest.raises(ConfigError, match="DUPLEX_WORKER_GRPC_PORT"):
        load_worker_config(_write(tmp_path, GUIDE_YAML), {"DUPLEX_WORKER_GRPC_PORT": "abc"})


def test_the_environment_alone_can_configure_a_worker() -> None:
    """No file: the required keys come from the environment."""
    env = {
        "DUPLEX_WORKER_NAME": "w",
        "DUPLEX_WORKER_GRPC_PORT": "0",
        "DUPLEX_WORKER_ADAPTER_TYPE": "tone",
        "DUPLEX_DEFAULT_MODEL_ID": "tone-fast",
    }
    config = load_worker_config(None, env)
    assert (config.worker.name, config.worker.grpc_port) == ("w", 0)
    assert config.audio.sample_rate == 48000


def test_every_override_names_an_existing_key() -> None:
    """The override table (the source of .env.example) has no dangling entries."""
    env = {
        "DUPLEX_WORKER_NAME": "w",
        "DUPLEX_WORKER_GRPC_PORT": "0",
        "DUPLEX_WORKER_ADAPTER_TYPE": "tone",
        "DUPLEX_DEFAULT_MODEL_ID": "tone-fast",
    }
    config = load_worker_config(None, env)
    for var, (section, key) in ENV_OVERRIDES.items():
        assert hasattr(getattr(config, section), key), var


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the path."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_worker_config(tmp_path / "nope.yaml", {})


def test_device_cuda_requires_cuda_and_device_cpu_never_asks_for_it(tmp_path: Path) -> None:
    """worker.device maps to the adapters' options: cuda is required (a load fails without
    it), cpu never asks for it, auto asks where onnxruntime has it; lone_job_threads passes on."""
    base = GUIDE_YAML.replace('adapter_type: "cosyvoice2"', 'adapter_type: "piper"')
    for device, use, require in (
        ("cuda", True, True),
        ("cpu", False, False),
        ("auto", True, False),
    ):
        text = base.replace(
            '  adapter_type: "piper"',
            f'  adapter_type: "piper"\n  device: "{device}"\n  lone_job_threads: 3',
        )
        options = load_worker_config(_write(tmp_path, text), {}).worker.adapter_options()
        assert (options.use_cuda, options.require_cuda) == (use, require), device
        assert options.lone_job_threads == 3


def test_device_cuda_with_use_cuda_false_is_rejected(tmp_path: Path) -> None:
    """The two keys contradict each other: the error names both."""
    text = GUIDE_YAML.replace(
        '  adapter_type: "cosyvoice2"',
        '  adapter_type: "cosyvoice2"\n  device: "cuda"\n  use_cuda: false',
    )
    with pytest.raises(ConfigError, match=r"worker\.device cuda contradicts worker\.use_cuda"):
        load_worker_config(_write(tmp_path, text), {})
