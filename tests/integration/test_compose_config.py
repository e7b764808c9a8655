"""The generated compose files as Docker's own tooling reads them, and the make targets that
print and refuse them (no engine needed: `docker-compose config` only parses).

The schema check of every variant is in tests/unit/test_deploy_compose.py; here Debian's
docker-compose (1.29, the one `make up` falls back to) must accept each file too, and
`make config` must print what the generator renders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from duplex.deploy.render import COMPOSE_FILE, render, write
from duplex.deploy.secrets import needed

from tests.unit.test_deploy_compose import EXAMPLE, STACKS, stack

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_V1 = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(
    COMPOSE_V1 is None, reason="docker-compose not installed (Debian: docker-compose)"
)


def _checker() -> str:
    found = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert found, "check-jsonschema is part of the dev extras (make venv)"
    return found


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    """make in the repository, never (re)building the virtualenv (-o: take it as it is)."""
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    COMPOSE_V1 is None, reason="docker-compose not installed (Debian: docker-compose)"
)
@pytest.mark.parametrize("name", list(STACKS))
def test_docker_compose_accepts_every_generated_variant(tmp_path: Path, name: str) -> None:
    """`docker-compose --env-file .env --profile monitoring config -q` in the generated folder,
    with the secrets the stack needs in the env file."""
    plan = stack(name)
    out = tmp_path / "compose" / "generated"
    write(render(plan), out)
    env_file = tmp_path / "stack.env"
    env_file.write_text("".join(f"{n}=x\n" for n in needed(plan)))
    assert COMPOSE_V1 is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [COMPOSE_V1, "--env-file", str(env_file), "-f", str(out / COMPOSE_FILE),
         "--profile", "monitoring", "config", "-q"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    COMPOSE_V1 is None, reason="docker-compose not installed (Debian: docker-compose)"
)
def test_docker_compose_refuses_the_stack_without_its_secrets(tmp_path: Path) -> None:
    """No env file: compose stops on the first ${SECRET:?...} with the message saying how."""
    out = tmp_path / "generated"
    write(render(stack("cpu-only")), out)
    assert COMPOSE_V1 is not None
    env = {k: v for k, v in os.environ.items() if k not in needed(stack("cpu-only"))}
    result = subprocess.run(
        [COMPOSE_V1, "-f", str(out / COMPOSE_FILE), "config", "-q"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "is not set: run make up, or set it in .env" in result.stderr


def test_make_config_gpus_2_prints_the_committed_example() -> None:
    """The guide's two-GPU example stays reproducible: `make config GPUS=2`."""
    result = _make("config", "GPUS=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXAMPLE.read_text(encoding="utf-8")


def test_make_config_refuses_bad_gpus_naming_the_value() -> None:
    result = _make("config", "GPUS=abc")
    assert result.returncode != 0
    assert "error: GPUS='abc'" in result.stderr and not result.stdout


def test_make_config_mounts_the_model_folder_it_is_given(tmp_path: Path) -> None:
    """XTTS_MODEL_DIR flows from make to the generator like the other inputs: the folder is
    mounted read-only in the xtts worker, which gets XTTS_MODEL_DIR pointing at it."""
    result = _make("config", "GPUS=1", "MODELS=0:xtts", f"XTTS_MODEL_DIR={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert f"- {tmp_path}:/models/xtts:ro\n" in result.stdout
    assert "XTTS_MODEL_DIR: /models/xtts\n" in result.stdout


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        (["MODELS=0:xtts", "XTTS_MODEL_DIR="], "error: MODELS='0:xtts': the xtts worker needs"),
        (["MODELS=0:cosyvoice2", "COSYVOICE_MODEL_DIR=/nonexistent/cosy"],
         "error: COSYVOICE_MODEL_DIR='/nonexistent/cosy' is not an existing directory"),
    ],
)  # fmt: skip
def test_make_config_refuses_a_gpu_model_worker_without_its_folder(
    variables: list[str], says: str
) -> None:
    result = _make("config", "GPUS=1", *variables)
    assert result.returncode == 2
    assert says in result.stderr and not result.stdout


def test_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    """The check is real: a service with a malformed ports entry is rejected."""
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  redis:\n    image: redis:7\n    ports: 6379\n")
    result = subprocess.run(
        [_checker(), "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
