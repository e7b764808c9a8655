"""`make up-workers`: a workers-only compose stack for another host. It validates against the
compose spec, names its workers after the host, keeps the Redis password out of every file,
and refuses a Redis on this host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from duplex.deploy.__main__ import main as deploy_main
from duplex.worker.config import load_worker_config

URL = "redis://:s3cret@10.20.30.40:6379/0"


def test_a_workers_only_stack_joins_the_named_redis_and_hides_its_password(
    tmp_path: Path,
) -> None:
    out = tmp_path / "workers"
    args = ["workers", "--gpus", "2", "--redis-url", URL, "--host-name", "gpu-b"]
    assert deploy_main([*args, "--out", str(out)]) == 0
    compose = out / "docker-compose.yml"
    checked = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(compose)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    services = yaml.safe_load(compose.read_text())["services"]
    assert sorted(services) == ["tts-piper-0", "tts-piper-1"]
    for service in services.values():
        assert service["network_mode"] == "host"
        assert "depends_on" not in service
        assert service["environment"]["REDIS_URL"].startswith("${REDIS_URL:?")
    for path in out.rglob("*"):
        if path.is_file():
            assert "s3cret" not in path.read_text(), path
    config = load_worker_config(out / "config" / "tts-piper-1.yaml", {"REDIS_URL": URL})
    assert config.worker.name == "gpu-b-tts-piper@1"
    assert (config.worker.host, config.worker.advertise_host) == ("0.0.0.0", "auto")
    assert config.redis.url == URL
    again = tmp_path / "again"
    assert deploy_main([*args, "--out", str(again)]) == 0
    assert compose.read_bytes() == (again / "docker-compose.yml").read_bytes()


@pytest.mark.parametrize(
    ("url", "says"),
    [("", "REDIS_URL is required"), ("redis://127.0.0.1:6379/0", "is on this host")],
)
def test_a_missing_or_local_redis_is_refused(
    tmp_path: Path, url: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "workers"
    assert deploy_main(["workers", "--gpus", "1", "--redis-url", url, "--out", str(out)]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()


def test_a_gpu_model_worker_on_another_host_mounts_its_weights_read_only(tmp_path: Path) -> None:
    """make up-workers MODELS=0:xtts XTTS_MODEL_DIR=...: the worker gets the folder read-only
    at /models/xtts and XTTS_MODEL_DIR pointing there; the file still validates against the
    compose spec, and the same inputs give the same bytes."""
    weights = tmp_path / "xtts-v2"
    weights.mkdir()
    args = ["workers", "--gpus", "2", "--models", "0:xtts", "--redis-url", URL,
            "--host-name", "gpu-b", "--xtts-model-dir", str(weights)]  # fmt: skip
    out = tmp_path / "workers"
    assert deploy_main([*args, "--out", str(out)]) == 0
    compose = out / "docker-compose.yml"
    checked = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(compose)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    services = yaml.safe_load(compose.read_text())["services"]
    xtts, piper = services["tts-xtts-0"], services["tts-piper-1"]
    assert f"{weights}:/models/xtts:ro" in xtts["volumes"]
    assert xtts["environment"]["XTTS_MODEL_DIR"] == "/models/xtts"
    assert xtts["image"] == "duplex-worker-cuda:latest-xtts"
    assert "XTTS_MODEL_DIR" not in piper["environment"]
    assert not any("/models/" in v for v in piper["volumes"])
    again = tmp_path / "again"
    assert deploy_main([*args, "--out", str(again)]) == 0
    assert compose.read_bytes() == (again / "docker-compose.yml").read_bytes()


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        (None, "give XTTS_MODEL_DIR"),
        ("/nonexistent/xtts", "'/nonexistent/xtts' is not an existing"),
    ],
)
def test_a_gpu_model_worker_without_its_folder_is_refused(
    tmp_path: Path, flag: str | None, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "workers"
    argv = ["workers", "--gpus", "1", "--models", "0:xtts", "--redis-url", URL, "--out", str(out)]
    if flag is not None:
        argv += ["--xtts-model-dir", flag]
    assert deploy_main(argv) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()
