"""The GPU adapters' optional installs, as one list of steps that `make venv` and the worker
image both run (so the test environment and the GPU image get the same torch/torchaudio pair).

    python -m duplex.devtools.extras install xtts        # make venv: pip install -e '.[xtts]', ...
    python extras.py deps --find-links W --find-links D xtts,cosyvoice2    # the image, offline
    python extras.py finish --find-links W xtts,cosyvoice2                 # the image, offline
    python extras.py verify xtts,cosyvoice2              # import what the adapters import

For each adapter, in this order:

1. ``deps``: the project's extra of the same name (torch 2.13 and the engine's requirements):
   `pip install -e '.[xtts]'` in a checkout, or, offline, the extra's pinned wheel set
   `<find-links>/<adapter>.txt` that devtools/wheels.py wrote;
2. ``finish``: the packages that must be installed with `--no-deps` (``NO_DEPS``), then
   torchaudio's compiled extension (`torchaudio/lib/*.so`) deleted. No torchaudio release is
   built for torch 2.13 (2.11, the newest, pins torch 2.11, and its extension does not load
   beside 2.13); without the extension torchaudio takes its own "not built" path and the
   pure-PyTorch functions the adapters call (`functional.resample`, `transforms.MelSpectrogram`,
   `compliance.kaldi.fbank`) run.

`install` is ``deps`` then ``finish``. The image runs them apart so that `pip check` can run
between them: the ``--no-deps`` packages leave their declared requirements unmet on purpose.

Standard library only: the image runs this file with its venv's Python before the project is
installed. Run it with the interpreter whose environment it should change.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

PIP_TIMEOUT_S = 1800


class ExtrasError(RuntimeError):
    """A step failed or an adapter name is unknown; the message says which."""


@dataclass(frozen=True)
class GpuExtra:
    """One GPU adapter's optional install: the project's extra `name` plus `no_deps`."""

    name: str
    no_deps: tuple[str, ...]
    """Pinned packages installed with --no-deps after the extra."""
    imports: tuple[str, ...]
    """What the adapter imports (checked by `verify`)."""


TORCHAUDIO = "torchaudio==2.11.0"  # its pure-PyTorch functions only; extension removed
TORCH_IMPORTS = (
    "torch",
    "torchaudio.functional",
    "torchaudio.transforms",
    "torchaudio.compliance.kaldi",
)

EXTRAS: tuple[GpuExtra, ...] = (
    # torchcodec: coqui-tts refuses to import without it; never called (audio is decoded with
    # numpy and soxr), and its own requirements are not wanted.
    GpuExtra(
        "xtts",
        (TORCHAUDIO, "torchcodec==0.17.0"),
        (*TORCH_IMPORTS, "TTS.tts.configs.xtts_config", "TTS.tts.models.xtts"),
    ),
    # cosyvoice2-eu pins numpy==1.26 and transformers==4.40.1, which would downgrade the whole
    # environment; the extra holds what its streaming model and vocoder import.
    GpuExtra(
        "cosyvoice2",
        (TORCHAUDIO, "cosyvoice2-eu==0.2.8"),
        (*TORCH_IMPORTS, "cosyvoice.cli.model", "cosyvoice.hifigan.generator"),
    ),
)
"""Every GPU adapter with an optional install, in the order they are installed."""


def parse_adapters(text: str | Iterable[str]) -> tuple[GpuExtra, ...]:
    """The extras named in `text` ("xtts,cosyvoice2", or names), in install order; "" or
    "none" is none. Unknown names raise ExtrasError."""
    parts = text.replace(" ", ",").split(",") if isinstance(text, str) else list(text)
    names = {p.strip() for p in parts if p.strip() and p.strip() != "none"}
    known = {extra.name for extra in EXTRAS}
    unknown = sorted(names - known)
    if unknown:
        raise ExtrasError(
            f"unknown GPU adapter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return tuple(extra for extra in EXTRAS if extra.name in names)


def adapter_list(extras: Iterable[GpuExtra]) -> str:
    """The comma-separated form (`GPU_ADAPTERS`, `--gpu-adapters`)."""
    return ",".join(extra.name for extra in extras)


def no_deps_specs(extras: Iterable[GpuExtra]) -> list[str]:
    """The --no-deps pins of `extras`, each once, in order."""
    return list(dict.fromkeys(spec for extra in extras for spec in extra.no_deps))


def pip_argv(find_links: Sequence[str]) -> list[str]:
    """`pip install` with this interpreter; offline (`--no-index`) when given wheel folders."""
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    if find_links:
        argv += ["--no-cache-dir", "--no-index"]
        for folder in find_links:
            argv += ["--find-links", folder]
    return argv


def deps_commands(
    extras: Sequence[GpuExtra], find_links: Sequence[str], project: str = "."
) -> list[list[str]]:
    """Step 1: the extras' requirements (editable project, or offline pinned lists)."""
    if not extras:
        return []
    if find_links:
        lists = [f"{Path(find_links[0]) / extra.name}.txt" for extra in extras]
        return [[*pip_argv(find_links), *(arg for f in lists for arg in ("-r", f))]]
    return [[*pip_argv(()), "-e", f"{project}[{adapter_list(extras)}]"]]


def finish_commands(extras: Sequence[GpuExtra], find_links: Sequence[str]) -> list[list[str]]:
    """Step 2's installs: the --no-deps pins."""
    specs = no_deps_specs(extras)
    return [[*pip_argv(find_links), "--no-deps", *specs]] if specs else []


def torchaudio_extension_files() -> list[Path]:
    """torchaudio's compiled extension libraries in this environment (none if not installed).
    find_spec on the top-level package locates it without importing it."""
    spec = find_spec("torchaudio")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "lib").glob("*.so"))


def remove_torchaudio_extension() -> list[Path]:
    """Delete torchaudio/lib/*.so; returns what was deleted."""
    removed = torchaudio_extension_files()
    for path in removed:
        path.unlink()
    return removed


def run_steps(commands: Iterable[Sequence[str]]) -> None:
    for argv in commands:
        print("+", " ".join(argv), file=sys.stderr, flush=True)
        try:
            result = subprocess.run(list(argv), timeout=PIP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ExtrasError(f"{' '.join(argv)} took over {PIP_TIMEOUT_S} s") from exc
        if result.returncode != 0:
            raise ExtrasError(f"{' '.join(argv)} failed with {result.returncode}")


def finish(extras: Sequence[GpuExtra], find_links: Sequence[str]) -> None:
    """Step 2: the --no-deps pins, then torchaudio's extension removed."""
    run_steps(finish_commands(extras, find_links))
    if any(TORCHAUDIO in extra.no_deps for extra in extras):
        for path in remove_torchaudio_extension():
            print(f"removed {path}", file=sys.stderr, flush=True)


def verify(extras: Sequence[GpuExtra]) -> None:
    """Import every module the adapters import (torch, torchaudio's functions, the engine)."""
    for module in dict.fromkeys(name for extra in extras for name in extra.imports):
        try:
            importlib.import_module(module)
        except Exception as exc:  # an import error of any kind fails the check
            raise ExtrasError(f"import {module}: {type(exc).__name__}: {exc}") from exc
    torch = importlib.import_module("torch")
    print(
        f"GPU adapters {adapter_list(extras)}: torch {torch.__version__} "
        f"(CUDA build {torch.version.cuda or 'none'}), imports ok",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="extras.py", description=__doc__)
    parser.add_argument("step", choices=("install", "deps", "finish", "verify"))
    parser.add_argument("adapters", help="comma-separated: " + adapter_list(EXTRAS))
    parser.add_argument(
        "--find-links",
        action="append",
        default=[],
        help="install offline from these wheel folders (the first holds <adapter>.txt)",
    )
    parser.add_argument("--project", default=".", help="the checkout (deps without wheels)")
    args = parser.parse_args(argv)
    try:
        extras = parse_adapters(args.adapters)
        if args.step in ("install", "deps"):
            run_steps(deps_commands(extras, args.find_links, args.project))
        if args.step in ("install", "finish"):
            finish(extras, args.find_links)
        if args.step == "verify":
            verify(extras)
    except ExtrasError as exc:
        print(f"!! {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
