"""The generated compose stacks: valid compose files, one worker per GPU pinned to it, unique
names and ports, each worker's config agreeing with its service, real entry points and
images, the same bytes for the same inputs, the committed two-GPU example reproducible.

Stacks are rendered in memory (no Docker needed); the schema check runs
`check-jsonschema --builtin-schema vendor.compose-spec` once over every variant.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from duplex.console.config import load_console_config
from duplex.deploy.__main__ import plan_from_args
from duplex.deploy.plan import StackPlan
from duplex.deploy.render import COMPOSE_FILE, render, wheel_flags, write
from duplex.orchestrator.config import load_orchestrator_config
from duplex.worker.catalog import builtin_catalog
from duplex.worker.config import load_worker_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "compose" / "examples" / "two-gpu.yml"
# Stand-ins for the operator's model folders: the generator only checks that they are
# folders on this host. A fixed path, so that a variant's bytes are the same in every test.
WEIGHTS = Path(tempfile.gettempdir()) / "duplex-deploy-test-weights"

# name -> the make variables, as flags of `python -m duplex.deploy config`.
STACKS: Mapping[str, tuple[str, ...]] = {
    "cpu-only": ("--gpus", "0"),
    "one-gpu": ("--gpus", "1"),
    "two-gpus": ("--gpus", "2"),
    "gpus-0-and-2": ("--gpus", "0,2"),
    "per-gpu-models": ("--gpus", "0,1", "--models", "0:piper+kokoro,1:tone", "--tls", "1",
                       "--webrtc", "0"),
    "hybrid": ("--gpus", "1", "--cpu-workers", "1", "--monitoring", "0"),
    "host-cpu": ("--gpus", "0", "--network", "host", "--monitoring", "0"),
    "host-gpus": ("--gpus", "2", "--network", "host", "--tls", "1", "--redis-port", "6390",
                  "--grpc-base-port", "17001", "--metrics-base-port", "19101"),
    "gpu-models": ("--gpus", "2", "--models", "0:xtts,1:cosyvoice2+piper",
                   "--xtts-model-dir", str(WEIGHTS / "xtts-v2"),
                   "--cosyvoice-model-dir", str(WEIGHTS / "cosyvoice2-0.5b")),
}  # fmt: skip


def weights_folders() -> None:
    """The folders the gpu-models variant names (made once; any test may be the first)."""
    for name in ("xtts-v2", "cosyvoice2-0.5b"):
        (WEIGHTS / name).mkdir(parents=True, exist_ok=True)


def stack(name: str) -> StackPlan:
    weights_folders()
    return plan_from_args(STACKS[name])


def documents(plan: StackPlan) -> dict[str, Any]:
    """Every generated YAML file, parsed (relative path -> data)."""
    return {
        path: yaml.safe_load(text)
        for path, text in render(plan).items()
        if path.endswith((".yml", ".yaml"))
    }


def compose_of(plan: StackPlan) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(render(plan)[COMPOSE_FILE])
    return data


def worker_services(compose: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("command", [])[:3] == ["python", "-m", "duplex.worker"]
    }


def config_path(service: Mapping[str, Any]) -> str:
    """The generated config file a service's `--config` names (under config/)."""
    command = service["command"]
    mounted = str(command[command.index("--config") + 1])
    assert mounted.startswith("/etc/duplex/"), mounted
    return "config/" + mounted.removeprefix("/etc/duplex/")


def written(tmp_path: Path, plan: StackPlan) -> Path:
    out = tmp_path / "generated"
    write(render(plan), out)
    return out


_REFERENCE = re.compile(r"^\$\{(\w+)(:\?|:-)(.*)\}$")


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as the process sees it with an env file that sets only the
    secrets: ${VAR:?...} gets a dummy value, ${VAR:-default} its default."""
    env: dict[str, str] = {}
    for key, value in service.get("environment", {}).items():
        match = _REFERENCE.match(str(value))
        if match is None:
            env[key] = str(value)
        else:
            env[key] = "secret" if match.group(2) == ":?" else match.group(3)
    return env


def python_modules(compose: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(service, module) for every `python -m module` a service runs, healthchecks included."""
    for name, service in compose["services"].items():
        for argv in (service.get("command"), service.get("healthcheck", {}).get("test")):
            if argv and "python" in argv:
                at = argv.index("python")
                assert argv[at + 1] == "-m", (name, argv)
                yield name, argv[at + 2]


# -- schema ---------------------------------------------------------------------------------


def test_every_variant_validates_against_the_compose_specification(tmp_path: Path) -> None:
    """check-jsonschema's builtin compose-spec schema accepts all of them, and the example."""
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert checker, "check-jsonschema is part of the dev extras (make venv)"
    files = []
    for name in STACKS:
        path = tmp_path / f"{name}.yml"
        path.write_text(render(stack(name))[COMPOSE_FILE], encoding="utf-8")
        files.append(str(path))
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", *files, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- GPUs and workers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("one-gpu", {"tts-piper-0": "0"}),
        ("two-gpus", {"tts-piper-0": "0", "tts-piper-1": "1"}),
        ("gpus-0-and-2", {"tts-piper-0": "0", "tts-piper-2": "2"}),
        ("per-gpu-models", {"tts-piper-0": "0", "tts-kokoro-0": "0", "tts-tone-1": "1"}),
    ],
)
def test_each_gpu_worker_reserves_its_gpu_and_sees_it_as_device_0(
    name: str, expected: dict[str, str]
) -> None:
    """device_ids names the host's GPU; inside, CUDA_VISIBLE_DEVICES=0 (the only one seen)."""
    workers = worker_services(compose_of(stack(name)))
    pinned = {}
    for service_name, service in workers.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        (pinned[service_name],) = device["device_ids"]
        assert service["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
        assert service["image"].startswith("duplex-worker-cuda:")
        assert service["build"]["args"]["ONNXRUNTIME"] == "onnxruntime-gpu"
    assert pinned == expected


def test_a_cpu_only_stack_runs_two_piper_workers_and_reserves_no_gpu() -> None:
    """GPUS=0: CPU_WORKERS (default 2) Piper workers on the slim CPU image."""
    workers = worker_services(compose_of(stack("cpu-only")))
    assert sorted(workers) == ["tts-piper-cpu0", "tts-piper-cpu1"]
    for service in workers.values():
        assert "deploy" not in service and "CUDA_VISIBLE_DEVICES" not in service["environment"]
        assert service["image"] == "duplex-worker:latest"
    assert [w.name for w in stack("cpu-only").workers] == ["tts-piper@cpu0", "tts-piper@cpu1"]


def test_cpu_workers_beside_gpus_add_cpu_piper_workers() -> None:
    """The guide's hybrid scaling: GPUS=1 CPU_WORKERS=1."""
    plan = stack("hybrid")
    assert [(w.name, w.gpu) for w in plan.workers] == [("tts-piper@0", 0), ("tts-piper@cpu0", None)]


def test_worker_names_follow_the_guide_and_services_replace_the_at_sign() -> None:
    """tts-<adapter>@N in Redis, tts-<adapter>-N in compose; two workers on a GPU, two adapters."""
    plan = stack("per-gpu-models")
    assert [(w.service, w.name, w.adapter, w.model_id) for w in plan.workers] == [
        ("tts-piper-0", "tts-piper@0", "piper", "piper-en-joe-medium"),
        ("tts-kokoro-0", "tts-kokoro@0", "kokoro", "kokoro-ja-jf_alpha"),
        ("tts-tone-1", "tts-tone@1", "tone", "tone-fast"),
    ]
    kokoro = compose_of(plan)["services"]["tts-kokoro-0"]
    assert kokoro["image"] == "duplex-worker-cuda:latest-kokoro"
    assert kokoro["build"]["args"]["KOKORO"] == "1"


def test_gpu_adapters_get_their_torch_stack_in_their_own_image_tag() -> None:
    """MODELS=0:xtts,1:cosyvoice2+piper: the XTTS and CosyVoice2 workers build with
    GPU_ADAPTERS (the steps of devtools/extras.py) under their own tags, Piper without, and
    the wheel set is made for both adapters."""
    plan = stack("gpu-models")
    services = compose_of(plan)["services"]
    xtts, cosy, piper = (services[s] for s in ("tts-xtts-0", "tts-cosyvoice2-1", "tts-piper-1"))
    assert xtts["image"] == "duplex-worker-cuda:latest-xtts"
    assert xtts["build"]["args"]["GPU_ADAPTERS"] == "xtts"
    assert cosy["image"] == "duplex-worker-cuda:latest-cosyvoice2"
    assert cosy["build"]["args"]["GPU_ADAPTERS"] == "cosyvoice2"
    assert piper["image"] == "duplex-worker-cuda:latest"
    assert "GPU_ADAPTERS" not in piper["build"]["args"]
    assert wheel_flags(plan)[-2:] == ["--gpu-adapters", "xtts,cosyvoice2"]
    assert "--gpu-adapters" not in wheel_flags(stack("per-gpu-models"))


def test_gpu_model_workers_mount_the_operators_weights_read_only_where_the_worker_looks() -> None:
    """XTTS_MODEL_DIR / COSYVOICE_MODEL_DIR: the host folder is mounted read-only at a fixed
    path in that worker only, and the worker's own catalog, given the service's environment,
    loads the model from there; other workers get no weights and no variable."""
    plan = stack("gpu-models")
    services = worker_services(compose_of(plan))
    expected = {
        "tts-xtts-0": ("XTTS_MODEL_DIR", WEIGHTS / "xtts-v2", "/models/xtts",
                       "xtts-v2-en-demo"),
        "tts-cosyvoice2-1": ("COSYVOICE_MODEL_DIR", WEIGHTS / "cosyvoice2-0.5b",
                             "/models/cosyvoice2", "cosyvoice2-en-base"),
    }  # fmt: skip
    for name, (variable, host, inside, model_id) in expected.items():
        service = services[name]
        assert f"{host}:{inside}:ro" in service["volumes"]
        env = service_env(service)
        assert env[variable] == inside
        assert builtin_catalog(environ=env).get(model_id).params["model_dir"] == inside
    piper = services["tts-piper-1"]
    assert piper["volumes"] == ["./config:/etc/duplex:ro"]
    assert not {"XTTS_MODEL_DIR", "COSYVOICE_MODEL_DIR"} & set(piper["environment"])
    inputs = render(plan)[COMPOSE_FILE].splitlines()[2]
    assert f"XTTS_MODEL_DIR={WEIGHTS / 'xtts-v2'}" in inputs


def test_model_folders_for_adapters_not_in_the_stack_change_nothing(tmp_path: Path) -> None:
    """XTTS_MODEL_DIR set (say, exported for the gpu tests) beside a Piper-only stack: the
    same bytes as without it, whether or not the folder exists."""
    plain = render(stack("two-gpus"))
    for folder in (tmp_path, tmp_path / "absent"):
        again = plan_from_args(["--gpus", "2", "--xtts-model-dir", str(folder)])
        assert render(again) == plain


def test_the_same_adapter_twice_on_one_gpu_gets_a_suffix() -> None:
    """0:piper+piper: two workers on GPU 0, tts-piper@0 and tts-piper@0-2."""
    plan = plan_from_args(["--gpus", "1", "--models", "0:piper+piper"])
    assert [(w.service, w.name, w.gpu) for w in plan.workers] == [
        ("tts-piper-0", "tts-piper@0", 0),
        ("tts-piper-0-2", "tts-piper@0-2", 0),
    ]


@pytest.mark.parametrize("name", list(STACKS))
def test_names_ports_and_addresses_are_unique(name: str) -> None:
    """No two workers share a name, a gRPC port or a metrics port; no two services an address
    or a published port."""
    plan = stack(name)
    workers = plan.workers
    for values in (
        [w.name for w in workers],
        [w.service for w in workers],
        [p for w in workers for p in (w.grpc_port, w.metrics_port)],
    ):
        assert len(values) == len(set(values)), values
    compose = compose_of(plan)
    addresses = [
        net["ipv4_address"]
        for svc in compose["services"].values()
        for net in svc.get("networks", {}).values()
    ]
    assert len(addresses) == len(set(addresses))
    published = [
        p.rsplit(":", 1)[0] for s in compose["services"].values() for p in s.get("ports", [])
    ]
    assert len(published) == len(set(published))


@pytest.mark.parametrize("name", list(STACKS))
def test_each_worker_config_agrees_with_its_service(name: str) -> None:
    """The worker's own file, read by the worker's own loader with the service's environment:
    its name, ports and adapter are the plan's, it binds where Prometheus and the
    orchestrator can reach it, and it advertises an address the orchestrator can dial."""
    plan = stack(name)
    docs = documents(plan)
    services = worker_services(docs[COMPOSE_FILE])
    assert list(services) == [w.service for w in plan.workers]
    for worker in plan.workers:
        service = services[worker.service]
        path = config_path(service)
        assert path == f"config/{worker.config_file}"
        config = _load(plan, path, load_worker_config, service_env(service))
        assert config.worker.name == worker.name
        assert config.worker.adapter_type == worker.adapter
        assert config.worker.grpc_port == worker.grpc_port
        assert config.worker.metrics_port == worker.metrics_port
        assert config.model_manager.default_model_id == worker.model_id
        assert config.worker.use_cuda == (worker.gpu is not None)
        probe = service["healthcheck"]["test"]
        assert probe[-2:] == ["grpc", f"127.0.0.1:{worker.grpc_port}"]
        if plan.host_mode:
            assert config.worker.host == config.worker.metrics_host == "127.0.0.1"
            assert config.worker.advertise_host == "127.0.0.1"
            assert config.redis.url == f"redis://127.0.0.1:{plan.options.ports.redis}/0"
        else:
            assert config.worker.host == config.worker.metrics_host == "0.0.0.0"
            # The orchestrator on the host network dials the fixed address (Docker's DNS does
            # not answer there); on the compose network, the service name.
            expected = worker.address if plan.orchestrator_on_host else worker.service
            assert config.worker.advertise_host == expected
            assert worker.address == _address(docs[COMPOSE_FILE], worker.service)
            assert config.redis.url == "redis://redis:6379/0"


def _address(compose: Mapping[str, Any], service: str) -> str:
    """A service's fixed address on the compose network."""
    networks = compose["services"][service]["networks"]
    return str(next(iter(networks.values()))["ipv4_address"])


def _load(plan: StackPlan, path: str, loader: Any, env: Mapping[str, str]) -> Any:
    """A generated config file read by its process's own loader."""
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "config.yaml"
        file.write_text(render(plan)[path], encoding="utf-8")
        return loader(file, env)


@pytest.mark.parametrize("name", list(STACKS))
def test_the_orchestrator_and_console_configs_load_and_agree_with_their_services(name: str) -> None:
    """Both files pass their loaders with the services' environment; ports and binds match
    the healthchecks, and the orchestrator reaches Redis and every worker by a name it can
    resolve."""
    plan = stack(name)
    compose = compose_of(plan)
    ports = plan.options.ports
    orch_service = compose["services"]["orchestrator"]
    orch = _load(
        plan, config_path(orch_service), load_orchestrator_config, service_env(orch_service)
    )
    assert orch.transport.websocket.port == ports.orchestrator
    assert orch.transport.webrtc.enabled == plan.options.webrtc
    assert orch_service["healthcheck"]["test"][-2:] == [f"127.0.0.1:{ports.orchestrator}", "/ready"]
    assert (orch.tls.cert_file != "") == plan.options.tls
    console_service = compose["services"]["console"]
    console = _load(
        plan, config_path(console_service), load_console_config, service_env(console_service)
    )
    assert console.console.port == ports.console
    assert console_service["healthcheck"]["test"][-2:] == [f"127.0.0.1:{ports.console}", "/health"]
    if plan.host_mode:
        assert orch.transport.websocket.host == console.console.host == "127.0.0.1"
        assert list(orch.transport.webrtc.host_addresses) == ["127.0.0.1"]
        return
    assert orch.transport.websocket.host == console.console.host == "0.0.0.0"
    if plan.orchestrator_on_host:
        assert orch_service["network_mode"] == "host" and "ports" not in orch_service
        # Redis by name through extra_hosts, to its fixed address; nothing else, so that
        # adding a worker does not change (and recreate) the orchestrator's service.
        assert orch_service["extra_hosts"] == [f"redis:{_address(compose, 'redis')}"]
        assert orch.redis.url == f"redis://redis:{ports.redis}/0"
    else:
        assert f"{ports.orchestrator}:{ports.orchestrator}" in orch_service["ports"]


@pytest.mark.parametrize("name", ["host-cpu", "host-gpus"])
def test_the_host_variant_keeps_everything_on_loopback(name: str) -> None:
    """NETWORK=host: every service on the host network, no ports or networks keys, and no
    0.0.0.0 anywhere in the stack's files."""
    plan = stack(name)
    compose = compose_of(plan)
    assert "networks" not in compose
    for service_name, service in compose["services"].items():
        assert service["network_mode"] == "host", service_name
        assert not {"ports", "networks", "extra_hosts"} & set(service), service_name
    for path, text in render(plan).items():
        assert "0.0.0.0" not in text, path


def test_webrtc_puts_the_orchestrator_on_the_host_network_and_without_it_publishes_ports() -> None:
    """aiortc cannot pin its ICE UDP ports: with WebRTC on, no `ports:` could publish them."""
    on = compose_of(stack("two-gpus"))["services"]["orchestrator"]
    off = compose_of(stack("per-gpu-models"))["services"]["orchestrator"]
    assert on["network_mode"] == "host"
    assert off["ports"] == ["8080:8080", "8443:8443"] and "network_mode" not in off


# -- processes, images, Redis ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STACKS))
def test_every_command_names_a_real_entry_point(name: str) -> None:
    """Each `python -m module` (commands and healthchecks) is a module with a __main__ here."""
    compose = compose_of(stack(name))
    modules = set(python_modules(compose))
    assert {m for _, m in modules} >= {"duplex.worker", "duplex.orchestrator", "duplex.console"}
    for service, module in modules:
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{service}: no module {module}"
        runnable = spec.submodule_search_locations is None or importlib.util.find_spec(
            f"{module}.__main__"
        )
        assert runnable, f"{service}: {module} cannot run with python -m"


def test_images_are_built_from_the_dockerfile_targets_that_exist() -> None:
    """Every build names a stage of the Dockerfile and only build arguments it declares."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.MULTILINE | re.IGNORECASE))
    declared = set(re.findall(r"^ARG\s+([A-Z_]+)", dockerfile, re.MULTILINE))
    for name in STACKS:
        for service_name, service in (
            compose_of(stack(name)).items()
            if False
            else compose_of(stack(name))["services"].items()
        ):
            build = service.get("build")
            if build is None:
                continue
            assert (ROOT / "compose" / "generated" / build["context"]).resolve() == ROOT
            assert build["target"] in stages, (service_name, build["target"])
            assert set(build.get("args", {})) <= declared, (service_name, build["args"])


def test_every_file_the_images_copy_exists() -> None:
    """COPY sources from the build context exist in the repository (the wheels excepted: the
    build makes them on the host) and the .dockerignore lets them in."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    sources = []
    for line in dockerfile.splitlines():
        parts = line.split()
        if parts[:1] != ["COPY"] or any(p.startswith("--from") for p in parts):
            continue
        sources += [p for p in parts[1:-1] if not p.startswith("--")]
    assert sources, "the Dockerfile copies nothing from the context"
    for source in sources:
        if source.startswith("${WHEELS}"):
            continue
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for source in sources:
        if not source.startswith("${WHEELS}"):
            assert f"!{source}" in ignore or "*" not in ignore, source


def test_redis_persists_and_notifies_and_every_service_restarts() -> None:
    """Append-only persistence on a volume (steering survives a restart), the keyspace events
    the live views need, and a restart policy on every service."""
    compose = compose_of(stack("two-gpus"))
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--notify-keyspace-events") + 1] == "Kghxsz"
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in compose["volumes"]
    for name, service in compose["services"].items():
        assert service["restart"] == "unless-stopped", name


def test_monitoring_is_a_profile_and_monitoring_0_leaves_it_out() -> None:
    """Prometheus and Grafana only under `profiles: [monitoring]`; MONITORING=0: not at all."""
    with_it = compose_of(stack("two-gpus"))["services"]
    for name in ("prometheus", "grafana"):
        assert with_it[name]["profiles"] == ["monitoring"]
    assert [n for n, s in with_it.items() if "profiles" in s] == ["prometheus", "grafana"]
    files = render(stack("hybrid"))
    assert not {"prometheus", "grafana"} & set(yaml.safe_load(files[COMPOSE_FILE])["services"])
    assert not any(p.startswith(("prometheus/", "grafana/")) for p in files)


def test_no_secret_is_written_into_the_stack() -> None:
    """Secrets are ${VAR:?...} references that compose fills from the env file."""
    compose = compose_of(stack("two-gpus"))
    orch = compose["services"]["orchestrator"]["environment"]
    console = compose["services"]["console"]["environment"]
    grafana = compose["services"]["grafana"]["environment"]
    assert orch["API_KEYS"].startswith("${API_KEYS:?")
    assert console["CONSOLE_ADMIN_TOKEN"].startswith("${CONSOLE_ADMIN_TOKEN:?")
    assert console["CONSOLE_SESSION_SECRET"].startswith("${CONSOLE_SESSION_SECRET:?")
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


# -- bytes ---------------------------------------------------------------------------------------


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    """Rendering twice, or writing twice, changes nothing; a count and the list it means give
    the same files."""
    first = render(stack("per-gpu-models"))
    assert first == render(stack("per-gpu-models"))
    assert render(stack("two-gpus")) == render(plan_from_args(["--gpus", "0,1"]))
    out = written(tmp_path, stack("per-gpu-models"))
    assert write(first, out) == []


def test_the_committed_two_gpu_example_is_make_config_gpus_2() -> None:
    """compose/examples/two-gpu.yml is byte for byte what `make config GPUS=2` prints."""
    assert EXAMPLE.read_text(encoding="utf-8") == render(stack("two-gpus"))[COMPOSE_FILE]


def test_adding_a_gpu_recreates_only_the_new_worker_and_prometheus() -> None:
    """GPUS=2 to GPUS=3: compose starts the new worker and recreates Prometheus (its scrape
    config gained a target: the digest label changed); every other service is unchanged, so
    the orchestrator keeps running and discovers the worker in Redis."""
    two, three = compose_of(stack("two-gpus")), compose_of(plan_from_args(["--gpus", "3"]))
    assert set(three["services"]) - set(two["services"]) == {"tts-piper-2"}
    changed = {n for n in two["services"] if three["services"][n] != two["services"][n]}
    assert changed == {"prometheus"}
    label = "io.duplex.config-digest"
    assert (
        three["services"]["prometheus"]["labels"][label]
        != two["services"]["prometheus"]["labels"][label]
    )


def test_a_changed_config_file_changes_its_service() -> None:
    """PUBLIC_HOST changes the console's links (console.yaml): the console's digest label
    changes, so compose recreates it (it reads its file only at start); workers stay."""
    before = compose_of(stack("two-gpus"))["services"]
    after = compose_of(plan_from_args(["--gpus", "2", "--public-host", "voice.example"]))
    changed = {n for n, s in after["services"].items() if s != before[n]}
    assert changed == {"console"}


def test_regenerating_removes_the_files_of_dropped_workers_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    """GPUS=2 then GPUS=1: tts-piper-1's config goes; files are rewritten in place (a running
    container's bind mount keeps seeing them), and tls/ is left alone."""
    out = written(tmp_path, stack("two-gpus"))
    (out / "tls").mkdir()
    (out / "tls" / "cert.pem").write_text("kept")
    inode = (out / "config" / "orchestrator.yaml").stat().st_ino
    write(render(stack("one-gpu")), out)
    assert not (out / "config" / "tts-piper-1.yaml").exists()
    assert (out / "config" / "tts-piper-0.yaml").exists()
    assert (out / "config" / "orchestrator.yaml").stat().st_ino == inode
    assert (out / "tls" / "cert.pem").read_text() == "kept"


def test_paths_to_the_repository_follow_the_stack_folder(tmp_path: Path) -> None:
    """STACK_DIR anywhere: the build context and Grafana's mounts still resolve to the
    repository (compose resolves them from the compose file's folder)."""
    out = tmp_path / "a" / "b" / "c"
    plan = plan_from_args(["--gpus", "1", "--out", str(out)])
    services = compose_of(plan)["services"]
    assert (out / services["orchestrator"]["build"]["context"]).resolve() == ROOT
    mounts = [v.split(":")[0] for v in services["grafana"]["volumes"] if v.startswith("..")]
    assert {str((out / m).resolve().relative_to(ROOT)) for m in mounts} == {
        "grafana/provisioning/dashboards",
        "grafana/dashboards",
    }
