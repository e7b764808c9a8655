"""What GPUS, MODELS, CPU_WORKERS and the flags take, and how bad input is refused: a clear
error that names the value, exit status 2, and nothing written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from duplex.deploy.__main__ import main, plan_from_args
from duplex.deploy.plan import plan_stack
from duplex.deploy.spec import (
    DeployError,
    Network,
    StackOptions,
    WorkerSpec,
    detect_gpus,
    parse_flag,
    parse_gpus,
    parse_models,
    parse_network,
    plan_workers,
)
from duplex.deploy.weights import check_model_dirs, parse_claims

KNOWN = ("piper", "kokoro", "tone")


def no_detection() -> tuple[int, ...]:
    raise AssertionError("GPUS was given: nothing should be detected")


@pytest.mark.parametrize(
    ("value", "gpus"),
    [("0", ()), ("1", (0,)), ("2", (0, 1)), ("0,2", (0, 2)), (" 3, 1 ", (3, 1)), ("3,", (3,))],
)
def test_gpus_takes_a_count_or_a_list(value: str, gpus: tuple[int, ...]) -> None:
    """A count means GPUs 0..N-1; a list names the indices (a trailing comma: one GPU)."""
    assert parse_gpus(value, no_detection) == gpus


def test_gpus_auto_asks_nvidia_smi() -> None:
    """auto (and empty) detect; the detection parses `nvidia-smi -L`."""
    listing = "GPU 0: NVIDIA H100 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)\n"
    gpus, message = detect_gpus(lambda argv: listing)
    assert gpus == (0, 1) and "0, 1" in message
    assert parse_gpus("auto", lambda: (0, 1)) == (0, 1)
    assert parse_gpus("", lambda: ()) == ()


def test_gpus_auto_without_nvidia_smi_falls_back_to_a_cpu_stack_and_says_so() -> None:
    """No nvidia-smi (or one that fails, or lists nothing): no GPU, with a message."""

    def missing(argv: list[str]) -> str:
        raise FileNotFoundError("nvidia-smi is not installed")

    def failing(argv: list[str]) -> str:
        raise subprocess.CalledProcessError(9, argv)

    for runner in (missing, failing, lambda argv: "No devices were found\n"):
        gpus, message = detect_gpus(runner)
        assert gpus == ()
        assert "CPU-only" in message and "GPUS=0" in message


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("abc", "'abc'"),
        ("-1", "'-1'"),
        ("0,0", "GPU 0 is listed twice"),
        ("0,x", "'x'"),
        ("1,-1", "'-1'"),
        ("100", "'100'"),
        (",", "names no GPU"),
    ],
)
def test_bad_gpus_is_an_error_naming_the_value(value: str, named: str) -> None:
    with pytest.raises(DeployError) as caught:
        parse_gpus(value, no_detection)
    assert named in str(caught.value) and str(caught.value).startswith("GPUS=")


def test_models_maps_adapters_to_gpus_and_plus_shares_a_gpu() -> None:
    """0:piper,1:kokoro; 0:piper+kokoro gives two workers on GPU 0; a model may be named."""
    models = parse_models("0:piper+kokoro, 1:kokoro=kokoro-ja-jm_kumo", (0, 1), KNOWN)
    assert models == {
        0: (WorkerSpec("piper", None, 0), WorkerSpec("kokoro", None, 0)),
        1: (WorkerSpec("kokoro", "kokoro-ja-jm_kumo", 1),),
    }
    workers = plan_workers((0, 1, 2), models, None)
    assert [(w.adapter, w.gpu) for w in workers] == [
        ("piper", 0),
        ("kokoro", 0),
        ("kokoro", 1),
        ("piper", 2),  # a GPU MODELS does not name gets Piper
    ]


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("0:espeak", "unknown adapter 'espeak'"),
        ("0:piper+bark", "unknown adapter 'bark'"),
        ("0:xtts", "unknown adapter 'xtts'"),  # not in this (test) build's KNOWN
        ("2:piper", "GPU 2 is not in GPUS (0,1)"),
        ("0:piper,0:tone", "GPU 0 is named twice"),
        ("piper", "'piper' is not GPU:ADAPTER"),
    ],
)
def test_bad_models_is_an_error_naming_the_value(value: str, named: str) -> None:
    with pytest.raises(DeployError) as caught:
        parse_models(value, (0, 1), KNOWN)
    message = str(caught.value)
    assert message.startswith(f"MODELS={value!r}") and named in message, message
    if "adapter" in named:
        assert message.endswith("kokoro, piper, tone"), message  # what this build has


def test_an_unknown_model_of_a_known_adapter_is_refused() -> None:
    with pytest.raises(DeployError, match="'kokoro-xx' is not one of kokoro's"):
        plan_from_args(["--gpus", "1", "--models", "0:kokoro=kokoro-xx"])


def test_cpu_workers_and_the_flags() -> None:
    """CPU_WORKERS defaults to 2 with no GPU and 0 beside GPUs; flags take 1/0; NETWORK
    bridge or host; no worker at all is refused."""
    assert len(plan_workers((), {}, None)) == 2
    assert len(plan_workers((0,), {}, None)) == 1
    assert len(plan_workers((), {}, 5)) == 5
    assert parse_flag("TLS", "1") and not parse_flag("TLS", "0")
    assert parse_network("host") is Network.HOST
    with pytest.raises(DeployError, match="MONITORING='maybe'"):
        parse_flag("MONITORING", "maybe")
    with pytest.raises(DeployError, match="NETWORK='overlay'"):
        parse_network("overlay")
    with pytest.raises(DeployError, match="no worker"):
        plan_from_args(["--gpus", "0", "--cpu-workers", "0"])
    with pytest.raises(DeployError, match="CPU_WORKERS='two'"):
        plan_from_args(["--gpus", "0", "--cpu-workers", "two"])


def test_clashing_ports_are_refused() -> None:
    """A worker's port on top of another service's is an error naming both."""
    with pytest.raises(DeployError, match="would both use port 8080"):
        plan_from_args(["--gpus", "2", "--grpc-base-port", "8079"])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--gpus", "abc"], "GPUS='abc'"),
        (["--gpus", "-1"], "GPUS='-1'"),
        (["--gpus", "0,1,0"], "GPU 0 is listed twice"),
        (["--gpus", "2", "--models", "1:nonesuch"], "unknown adapter 'nonesuch'"),
    ],
)
def test_the_cli_refuses_bad_input_with_status_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    """`generate` with a bad value: exit 2, one line naming the value, no output folder, no
    env file."""
    out, env = tmp_path / "generated", tmp_path / ".env"
    status = main(["generate", *args, "--out", str(out), "--env-file", str(env)])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err
    assert not out.exists() and not env.exists()


def test_generate_writes_the_stack_and_the_secrets_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A good run writes the folder and prints the new secrets; the second prints none."""
    out, env = tmp_path / "generated", tmp_path / ".env"
    argv = ["generate", "--gpus", "0", "--network", "host", "--out", str(out)]
    assert main([*argv, "--env-file", str(env)]) == 0
    first = capsys.readouterr().out
    assert (out / "docker-compose.yml").is_file() and "API_KEYS=" in first
    assert main([*argv, "--env-file", str(env)]) == 0
    assert "New secrets" not in capsys.readouterr().out
    assert (out / "wheels.args").read_text() == "\n"


# -- the GPU models' weights (XTTS_MODEL_DIR, COSYVOICE_MODEL_DIR) -------------------------------


def test_model_folders_are_checked_for_the_adapters_that_need_them(tmp_path: Path) -> None:
    """Only xtts and cosyvoice2 need one; a relative folder is taken from make's folder; the
    result is sorted by adapter, whatever the order of the workers."""
    (tmp_path / "xtts").mkdir()
    (tmp_path / "cosy").mkdir()
    given = {"XTTS_MODEL_DIR": "xtts/", "COSYVOICE_MODEL_DIR": str(tmp_path / "cosy")}
    dirs = check_model_dirs(given, ["xtts", "piper", "cosyvoice2", "xtts"], "m", cwd=str(tmp_path))
    assert dirs == (("cosyvoice2", str(tmp_path / "cosy")), ("xtts", str(tmp_path / "xtts")))
    assert check_model_dirs({}, ["piper", "kokoro"], "m") == ()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("", "MODELS='0:xtts': the xtts worker needs its weights: give XTTS_MODEL_DIR"),
        ("  ", "give XTTS_MODEL_DIR"),
        ("absent", "XTTS_MODEL_DIR='absent' is not an existing directory on this host"),
        ("model.pth", "XTTS_MODEL_DIR='model.pth' is not an existing directory"),
        ("with space", "XTTS_MODEL_DIR='with space': a bind mount cannot carry this path"),
        ("a:b", "XTTS_MODEL_DIR='a:b': a bind mount cannot carry"),
    ],
)
def test_a_missing_or_unusable_model_folder_is_refused_naming_it(
    tmp_path: Path, value: str, named: str
) -> None:
    (tmp_path / "model.pth").write_text("not a folder")
    (tmp_path / "with space").mkdir()
    (tmp_path / "a:b").mkdir()
    with pytest.raises(DeployError) as caught:
        check_model_dirs({"XTTS_MODEL_DIR": value}, ["xtts"], "0:xtts", cwd=str(tmp_path))
    assert named in str(caught.value), caught.value


@pytest.mark.parametrize("command", ["generate", "config", "systemd", "workers"])
@pytest.mark.parametrize(
    ("adapter", "flag", "named"),
    [
        ("xtts", "", "give XTTS_MODEL_DIR"),
        ("cosyvoice2", "--cosyvoice-model-dir=/nonexistent/cosy",
         "COSYVOICE_MODEL_DIR='/nonexistent/cosy' is not an existing directory"),
    ],
)  # fmt: skip
def test_every_command_refuses_a_gpu_model_worker_without_its_folder_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    adapter: str,
    flag: str,
    named: str,
) -> None:
    """make up, make config, make systemd and make up-workers: exit 2, one line naming the
    value, no output folder, no env file."""
    out, env = tmp_path / "out", tmp_path / ".env"
    argv = [command, "--gpus", "1", "--models", f"0:{adapter}", "--out", str(out)]
    argv += [flag] if flag else []
    if command == "generate":
        argv += ["--env-file", str(env)]
    if command == "workers":
        argv += ["--redis-url", "redis://10.20.30.40:6379/0"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and named in captured.err, captured.err
    assert not captured.out and not out.exists() and not env.exists()


def test_the_plan_itself_refuses_a_gpu_model_worker_without_a_folder() -> None:
    """A StackOptions built by hand (not through the CLI) cannot skip the weights either."""
    options = StackOptions(workers=(WorkerSpec("xtts", gpu=0),))
    with pytest.raises(DeployError, match="xtts worker needs its weights: give XTTS_MODEL_DIR"):
        plan_stack(options, {"xtts": ("xtts-v2-en-demo",)})


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("", "POOLS='xtts': the xtts workers need their weights: give XTTS_MODEL_PVC"),
        ("Models", "XTTS_MODEL_PVC='Models': 'Models' is not a claim name"),
        ("models/../etc", "XTTS_MODEL_PVC='models/../etc': '../etc' is not a folder"),
        ("models/a b", "'a b' is not a folder in the claim"),
    ],
)
def test_a_missing_or_malformed_weights_claim_is_refused_naming_it(value: str, named: str) -> None:
    with pytest.raises(DeployError) as caught:
        parse_claims({"XTTS_MODEL_PVC": value}, ["xtts", "piper"], "xtts")
    assert named in str(caught.value), caught.value


def test_a_claim_may_name_a_folder_inside_it() -> None:
    (claim,) = parse_claims({"COSYVOICE_MODEL_PVC": "models/cosyvoice2/0.5b/"}, ["cosyvoice2"], "")
    assert (claim.claim, claim.sub_path, claim.volume) == (
        "models",
        "cosyvoice2/0.5b",
        "weights-cosyvoice2",
    )
    assert parse_claims({}, ["piper"], "piper") == ()
