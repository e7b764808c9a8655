"""`make k8s`: the generated manifests pass kubernetes-validate (strict, pinned Kubernetes
version), every probe asks a path or port the real process serves, a worker pod asks for
exactly one GPU, each config file loads with the real loader, and the same inputs give the
same bytes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from duplex.console.app import build_console_app
from duplex.console.config import load_console_config
from duplex.deploy.__main__ import main as deploy_main
from duplex.deploy.k8s_spec import K8S_VERSION
from duplex.orchestrator.app import build_app
from duplex.orchestrator.config import load_orchestrator_config
from duplex.worker.config import load_worker_config
from duplex.worker.health import SERVICE_NAME
from starlette.routing import Route

ARGS = ["--gpus-per-node", "4", "--nodes", "2", "--pools", "piper:6,kokoro"]


def generate(out: Path, *extra: str) -> dict[str, list[dict[str, Any]]]:
    assert deploy_main(["k8s", *ARGS, *extra, "--out", str(out)]) == 0
    return {
        p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
        for p in sorted(out.glob("*.yaml"))
    }


def by_kind(files: dict[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [d for docs in files.values() for d in docs if d["kind"] == kind]


def named(files: dict[str, list[dict[str, Any]]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(files, kind) if d["metadata"]["name"] == name]
    return doc


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def config_text(files: dict[str, list[dict[str, Any]]], name: str, key: str) -> str:
    return named(files, "ConfigMap", name)["data"][key]  # type: ignore[no-any-return]


def test_every_manifest_passes_kubernetes_validate_strictly(tmp_path: Path) -> None:
    files = generate(tmp_path / "k8s")
    checked = 0
    for docs in files.values():
        for doc in docs:
            if doc["kind"] == "Kustomization":
                continue
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            checked += 1
    kinds = {d["kind"] for docs in files.values() for d in docs}
    assert {"Deployment", "StatefulSet", "Service", "PodDisruptionBudget"} <= kinds
    kustomization = files["kustomization.yaml"][0]
    assert sorted(kustomization["resources"]) == sorted(set(files) - {"kustomization.yaml"})
    print(f"{checked} documents valid for Kubernetes {K8S_VERSION}")


def test_worker_pools_split_the_gpus_one_gpu_per_pod_with_a_budget(tmp_path: Path) -> None:
    files = generate(tmp_path / "k8s")
    replicas = {}
    for deployment in by_kind(files, "Deployment"):
        container = container_of(deployment)
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "worker":
            assert gpus == 1
            assert "nvidia.com/gpu" not in container["resources"].get("requests", {})
            replicas[deployment["metadata"]["name"]] = deployment["spec"]["replicas"]
            budget = named(files, "PodDisruptionBudget", deployment["metadata"]["name"])
            assert (
                budget["spec"]["selector"]["matchLabels"]
                == deployment["spec"]["selector"]["matchLabels"]
            )
        else:
            assert gpus is None
    assert replicas == {"worker-piper": 6, "worker-kokoro": 2}


def test_probes_ask_the_paths_and_ports_the_real_processes_serve(tmp_path: Path) -> None:
    files = generate(tmp_path / "k8s")
    folder = tmp_path / "configs"
    folder.mkdir()

    # The orchestrator: its config's port, its app's /ready and /health.
    (folder / "orchestrator.yaml").write_text(
        config_text(files, "orchestrator-config", "orchestrator.yaml")
    )
    orch_config = load_orchestrator_config(folder / "orchestrator.yaml", {"API_KEYS": "k"})
    orch = container_of(named(files, "Deployment", "orchestrator"))
    paths = {r.path for r in build_app(orch_config).routes if isinstance(r, Route)}
    port = orch_config.transport.websocket.port
    assert orch["ports"] == [{"name": "http", "containerPort": port}]
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        assert orch[probe]["httpGet"] == {"path": path, "port": port}
        assert path in paths

    # The console: the same for its own port and /health.
    (folder / "console.yaml").write_text(config_text(files, "console-config", "console.yaml"))
    console_config = load_console_config(
        folder / "console.yaml",
        {"CONSOLE_ADMIN_TOKEN": "t" * 32, "CONSOLE_SESSION_SECRET": "s" * 32},
    )
    console = container_of(named(files, "Deployment", "console"))
    console_paths = {
        r.path for r in build_console_app(console_config).routes if isinstance(r, Route)
    }
    for probe in ("readinessProbe", "livenessProbe"):
        assert console[probe]["httpGet"] == {"path": "/health", "port": console_config.console.port}
        assert "/health" in console_paths

    # A worker: gRPC health on its configured port, for the service its health servicer sets.
    (folder / "worker.yaml").write_text(config_text(files, "worker-piper-config", "worker.yaml"))
    pod_env = {"DUPLEX_WORKER_NAME": "worker-piper-abc", "DUPLEX_WORKER_ADVERTISE_HOST": "10.0.0.7"}
    worker_config = load_worker_config(folder / "worker.yaml", pod_env)
    worker = container_of(named(files, "Deployment", "worker-piper"))
    assert worker_config.worker.name == "worker-piper-abc"
    assert worker_config.worker.advertise_host == "10.0.0.7"
    for probe in ("startupProbe", "readinessProbe"):
        assert worker[probe]["grpc"] == {"port": worker_config.worker.grpc_port,
                                         "service": SERVICE_NAME}  # fmt: skip
    assert worker["livenessProbe"]["tcpSocket"]["port"] == worker_config.worker.grpc_port
    env = {e["name"]: e for e in worker["env"]}
    assert env["DUPLEX_WORKER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["DUPLEX_WORKER_ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "status.podIP"
    )
    # Every Service port points at a named container port of the pods it selects.
    for service in by_kind(files, "Service"):
        selector = service["spec"]["selector"]
        pods = [
            d
            for d in by_kind(files, "Deployment") + by_kind(files, "StatefulSet")
            if d["spec"]["template"]["metadata"]["labels"] == selector
        ]
        assert len(pods) == 1, service["metadata"]["name"]
        names = {p["name"] for p in container_of(pods[0])["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_the_same_inputs_give_the_same_bytes_and_bad_inputs_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate(tmp_path / "a")
    generate(tmp_path / "b")
    a = {p.name: p.read_bytes() for p in sorted((tmp_path / "a").iterdir())}
    b = {p.name: p.read_bytes() for p in sorted((tmp_path / "b").iterdir())}
    assert a == b
    other = generate(tmp_path / "c", "--orchestrators", "3", "--redis-url", "redis://r.lan:6379/0")
    assert "redis.yaml" not in other
    assert named(other, "Deployment", "orchestrator")["spec"]["replicas"] == 3

    for bad, says in (
        (["--gpus-per-node", "2", "--nodes", "1", "--pools", "piper:3"], "POOLS="),
        (["--gpus-per-node", "0"], "GPUS_PER_NODE="),
        (["--gpus-per-node", "1", "--pools", "nope"], "'nope' is not an adapter"),
        (["--gpus-per-node", "1", "--redis-url", "redis://:pw@r:6379/0"], "password"),
    ):
        out = tmp_path / "bad"
        assert deploy_main(["k8s", *bad, "--out", str(out)]) == 2
        assert says in capsys.readouterr().err
        assert not out.exists()


GPU_MODELS = ["--gpus-per-node", "2", "--nodes", "2", "--pools", "piper,xtts,cosyvoice2:1",
              "--xtts-model-pvc", "models/xtts-v2",
              "--cosyvoice-model-pvc", "cosyvoice-weights"]  # fmt: skip


def test_gpu_model_pools_mount_their_weights_claim_read_only_and_validate(
    tmp_path: Path,
) -> None:
    """POOLS with xtts and cosyvoice2: each of those pods mounts its existing claim (a folder
    inside it with CLAIM/FOLDER) read-only at the fixed path and points the worker's variable
    there, runs the image with that adapter's torch stack, and every manifest still passes
    kubernetes-validate strictly; the same inputs give the same bytes."""
    out = tmp_path / "k8s"
    assert deploy_main(["k8s", *GPU_MODELS, "--out", str(out)]) == 0
    files = {
        p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
        for p in sorted(out.glob("*.yaml"))
    }
    for docs in files.values():
        for doc in docs:
            if doc["kind"] != "Kustomization":
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    expected = {
        "worker-xtts": ("XTTS_MODEL_DIR", "/models/xtts", "models", "xtts-v2"),
        "worker-cosyvoice2": (
            "COSYVOICE_MODEL_DIR",
            "/models/cosyvoice2",
            "cosyvoice-weights",
            None,
        ),
    }
    for name, (variable, inside, claim, sub_path) in expected.items():
        deployment = named(files, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        container = container_of(deployment)
        adapter = name.removeprefix("worker-")
        assert container["image"] == f"duplex-worker-cuda:latest-{adapter}"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[variable] == inside
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == inside]
        assert mount["readOnly"] is True and mount.get("subPath") == sub_path
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    piper = container_of(named(files, "Deployment", "worker-piper"))
    assert [m["name"] for m in piper["volumeMounts"]] == ["config"]
    assert piper["image"] == "duplex-worker-cuda:latest"
    again = tmp_path / "again"
    assert deploy_main(["k8s", *GPU_MODELS, "--out", str(again)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        p.name: p.read_bytes() for p in again.iterdir()
    }


@pytest.mark.parametrize(
    ("drop", "value", "says"),
    [
        ("--xtts-model-pvc", None, "give XTTS_MODEL_PVC"),
        ("--cosyvoice-model-pvc", "Weights", "COSYVOICE_MODEL_PVC='Weights': 'Weights' is not"),
        ("--xtts-model-pvc", "models/../x", "XTTS_MODEL_PVC='models/../x'"),
    ],
)
def test_a_gpu_model_pool_without_a_usable_claim_is_refused(
    tmp_path: Path,
    drop: str,
    value: str | None,
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = list(GPU_MODELS)
    at = argv.index(drop)
    if value is None:
        del argv[at : at + 2]
    else:
        argv[at + 1] = value
    out = tmp_path / "bad"
    assert deploy_main(["k8s", *argv, "--out", str(out)]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()


def test_make_k8s_passes_the_weights_claim_through(tmp_path: Path) -> None:
    """XTTS_MODEL_PVC flows from make to the generator; without it make k8s fails naming it."""
    root = Path(__file__).resolve().parents[2]

    def make_k8s(*variables: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-s", "-o", ".venv/.installed", "k8s", "GPUS_PER_NODE=1", "POOLS=xtts",
             f"K8S_DIR={tmp_path / 'k8s'}", *variables],
            cwd=root, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    refused = make_k8s("XTTS_MODEL_PVC=")
    assert refused.returncode == 2 and "give XTTS_MODEL_PVC" in refused.stderr
    assert not (tmp_path / "k8s").exists()
    done = make_k8s("XTTS_MODEL_PVC=models/xtts-v2")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "k8s" / "worker-xtts.yaml").read_text()
    assert "claimName: models\n" in text and "subPath: xtts-v2\n" in text
