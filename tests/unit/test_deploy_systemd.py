"""`make systemd GPUS=N`: the guide's option 3. The units pass `systemd-analyze verify`
(Debian's systemd package; skipped, saying so, where it is absent) and a structural check
that always runs: the template pins CUDA_VISIBLE_DEVICES=%i and reads worker-gpu%i.yaml, and
each GPU's config is a valid worker config with its own name and ports."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
from duplex.deploy.__main__ import main, plan_from_args
from duplex.deploy.render import write
from duplex.deploy.spec import DeployError
from duplex.deploy.systemd import (
    CONSOLE_UNIT,
    ORCHESTRATOR_UNIT,
    WORKER_UNIT,
    SystemdOptions,
    render_systemd,
)
from duplex.orchestrator.config import load_orchestrator_config
from duplex.worker.config import load_worker_config

ROOT = Path(__file__).resolve().parents[2]
ANALYZE = shutil.which("systemd-analyze")
UNITS = (WORKER_UNIT, ORCHESTRATOR_UNIT, CONSOLE_UNIT)


def units(tmp_path: Path, gpus: str = "2", **options: str) -> Path:
    """The files `make systemd GPUS=gpus` writes, with the checkout as the install dir (so
    the ExecStart interpreter exists for systemd-analyze)."""
    files = render_systemd(
        plan_from_args(["--gpus", gpus]),
        SystemdOptions(install_dir=str(ROOT), **options),
    )
    write(files, tmp_path)
    return tmp_path


def unit_sections(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def test_the_worker_template_pins_its_gpu_as_the_guide_does(tmp_path: Path) -> None:
    """tts-worker@.service: CUDA_VISIBLE_DEVICES=%i, worker-gpu%i.yaml, restart on failure,
    an unprivileged user, after Redis."""
    unit = unit_sections(units(tmp_path) / WORKER_UNIT)
    service = unit["Service"]
    assert service["Environment"] == "CUDA_VISIBLE_DEVICES=%i"
    assert service["ExecStart"] == (
        f"{ROOT}/.venv/bin/python -m duplex.worker --config /etc/duplex/worker-gpu%i.yaml"
    )
    assert service["Restart"] == "on-failure" and service["User"] == "duplex"
    assert "redis-server.service" in unit["Unit"]["After"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_each_gpu_gets_a_valid_config_with_its_own_name_and_ports(tmp_path: Path) -> None:
    """worker-gpu0.yaml and worker-gpu1.yaml load with the worker's own loader; names
    tts-piper@N, distinct ports, all on loopback beside the local Redis."""
    folder = units(tmp_path)
    configs = [load_worker_config(folder / f"worker-gpu{i}.yaml", {}) for i in (0, 1)]
    assert [c.worker.name for c in configs] == ["tts-piper@0", "tts-piper@1"]
    ports = [p for c in configs for p in (c.worker.grpc_port, c.worker.metrics_port)]
    assert len(set(ports)) == 4
    for config in configs:
        assert config.worker.host == config.worker.advertise_host == "127.0.0.1"
        assert config.redis.url == "redis://127.0.0.1:6379/0" and config.worker.use_cuda
    orchestrator = load_orchestrator_config(folder / "orchestrator.yaml", {"API_KEYS": "k"})
    assert orchestrator.transport.websocket.host == "0.0.0.0"  # clients on the network
    assert not (folder / "worker-gpu2.yaml").exists()


def test_a_gpu_model_workers_config_names_the_operators_folder_where_it_is(
    tmp_path: Path,
) -> None:
    """No container under systemd: XTTS_MODEL_DIR goes into that worker's own config
    (model_manager.model_dirs, the host path), which the worker's catalog reads; the Piper
    worker's config names no folder."""
    weights = tmp_path / "xtts-v2"
    weights.mkdir()
    plan = plan_from_args(
        ["--gpus", "2", "--models", "0:xtts,1:piper", "--xtts-model-dir", str(weights)]
    )
    folder = tmp_path / "systemd"
    write(render_systemd(plan, SystemdOptions(install_dir=str(ROOT))), folder)
    xtts = load_worker_config(folder / "worker-gpu0.yaml", {})
    (entry,) = xtts.model_manager.model_dirs
    assert (entry.model_id, entry.path) == ("xtts-v2-en-demo", str(weights))
    assert xtts.model_manager.default_model_id == "xtts-v2-en-demo"
    assert load_worker_config(folder / "worker-gpu1.yaml", {}).model_manager.model_dirs == ()


def test_the_orchestrator_and_console_units_read_the_secrets_file(tmp_path: Path) -> None:
    """API_KEYS and the console token come from EnvironmentFile, never from the unit."""
    folder = units(tmp_path)
    for name, module in (
        (ORCHESTRATOR_UNIT, "duplex.orchestrator"),
        (CONSOLE_UNIT, "duplex.console"),
    ):
        service = unit_sections(folder / name)["Service"]
        assert service["EnvironmentFile"] == "/etc/duplex/duplex.env"
        assert f" -m {module} --config /etc/duplex/" in service["ExecStart"]
    example = (folder / "duplex.env.example").read_text(encoding="utf-8")
    assert "API_KEYS=\n" in example and "CONSOLE_ADMIN_TOKEN=\n" in example


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian: systemd)")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the three units and on an instance of the template: no
    error and no warning (it exits 0 on some warnings, so its output must be empty too)."""
    folder = units(tmp_path)
    instance = folder / "tts-worker@0.service"
    shutil.copy(folder / WORKER_UNIT, instance)
    paths = [str(folder / u) for u in UNITS] + [str(instance)]
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", *paths], capture_output=True, text=True, timeout=60
    )
    ours = [
        line for line in result.stderr.splitlines() if str(folder) in line or ".service" in line
    ]
    assert result.returncode == 0 and not ours, result.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian: systemd)")
def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check is real: an interpreter that does not exist is refused."""
    folder = units(tmp_path)
    broken = folder / "broken.service"
    text = (folder / CONSOLE_UNIT).read_text(encoding="utf-8")
    broken.write_text(text.replace(f"{ROOT}/.venv/bin/python", "/nonexistent/python"))
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


def test_systemd_refuses_what_one_unit_per_gpu_cannot_express(tmp_path: Path) -> None:
    """GPUS=0 (CPU workers) or two workers on one GPU: an error, and nothing written."""
    for argv in (["--gpus", "0"], ["--gpus", "1", "--models", "0:piper+kokoro"]):
        with pytest.raises(DeployError, match="make systemd"):
            render_systemd(plan_from_args(argv), SystemdOptions())
    out = tmp_path / "systemd"
    assert main(["systemd", "--gpus", "0", "--out", str(out)]) == 2
    assert not out.exists()
    with pytest.raises(DeployError, match="INSTALL_DIR='relative'"):
        SystemdOptions(install_dir="relative")
