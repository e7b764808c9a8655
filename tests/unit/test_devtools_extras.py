"""The GPU adapters' install steps (devtools/extras.py): one list that `make venv` and the
worker image both run, so that the tests' torch/torchaudio pair is the image's."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from duplex.devtools.extras import (
    EXTRAS,
    TORCHAUDIO,
    ExtrasError,
    adapter_list,
    deps_commands,
    finish_commands,
    no_deps_specs,
    parse_adapters,
    remove_torchaudio_extension,
)

ROOT = Path(__file__).resolve().parents[2]


def test_adapters_come_back_in_install_order_whatever_the_order_given() -> None:
    assert adapter_list(parse_adapters("cosyvoice2,xtts")) == "xtts,cosyvoice2"
    assert adapter_list(parse_adapters(" xtts , xtts ")) == "xtts"
    assert parse_adapters("") == () == parse_adapters("none")


def test_an_unknown_adapter_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ExtrasError, match=r"unknown GPU adapter\(s\) piper; known: cosyvoice2"):
        parse_adapters("xtts,piper")


def test_every_gpu_extra_is_a_project_extra_and_none_asks_for_torchaudio() -> None:
    """torchaudio 2.11 pins torch 2.11: an extra that named it would pull the wrong torch; it
    is installed --no-deps instead, by every adapter that needs its functions."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        optional = tomllib.load(fh)["project"]["optional-dependencies"]
    for extra in EXTRAS:
        assert extra.name in optional
        assert not [r for r in optional[extra.name] if r.startswith("torchaudio")]
        assert [r for r in optional[extra.name] if r.startswith("torch==")] == ["torch==2.13.0"]
        assert TORCHAUDIO in extra.no_deps


def test_no_deps_pins_are_listed_once_each() -> None:
    both = parse_adapters("xtts,cosyvoice2")
    assert no_deps_specs(both) == [TORCHAUDIO, "torchcodec==0.17.0", "cosyvoice2-eu==0.2.8"]


def test_a_checkout_installs_the_editable_extra_then_the_pins_with_no_deps() -> None:
    xtts = parse_adapters("xtts")
    (deps,) = deps_commands(xtts, (), ".")
    assert deps[0] == sys.executable and deps[-2:] == ["-e", ".[xtts]"]
    assert "--no-index" not in deps
    (finish,) = finish_commands(xtts, ())
    assert finish[-3:] == ["--no-deps", TORCHAUDIO, "torchcodec==0.17.0"]


def test_the_image_installs_offline_from_the_pinned_lists_of_the_wheel_set() -> None:
    both = parse_adapters("xtts,cosyvoice2")
    links = ("/wheels/gpu", "/wheels/deps")
    (deps,) = deps_commands(both, links)
    assert "--no-index" in deps
    assert deps[-4:] == ["-r", "/wheels/gpu/xtts.txt", "-r", "/wheels/gpu/cosyvoice2.txt"]
    assert deps.count("--find-links") == 2
    (finish,) = finish_commands(both, links)
    assert "--no-index" in finish and "--no-deps" in finish
    assert deps_commands((), links) == [] == finish_commands((), links)


def test_removing_the_extension_deletes_only_torchaudio_lib_so_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "torchaudio" / "lib"
    lib.mkdir(parents=True)
    (tmp_path / "torchaudio" / "__init__.py").write_text("")
    (lib / "__init__.py").write_text("")
    for name in ("libtorchaudio.so", "_torchaudio.so"):
        (lib / name).write_bytes(b"\x7fELF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchaudio", raising=False)
    removed = remove_torchaudio_extension()
    assert sorted(p.name for p in removed) == ["_torchaudio.so", "libtorchaudio.so"]
    assert sorted(p.name for p in lib.iterdir()) == ["__init__.py"]
    assert remove_torchaudio_extension() == []


def test_make_venv_and_the_image_run_the_same_steps_and_nothing_else() -> None:
    """No second copy that could drift: neither the Makefile nor the Dockerfile names the
    pinned packages or deletes the extension itself; both call extras.py."""
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for text in (makefile, dockerfile):
        assert not re.search(r"torchaudio==|torchcodec==|cosyvoice2-eu==|lib/\*\.so", text)
    for extra in EXTRAS:
        assert f"-m duplex.devtools.extras install {extra.name}" in makefile
    assert 'extras="/opt/duplex/bin/python /wheels/gpu/extras.py"' in dockerfile
    for step in ("deps", "finish", "verify"):
        assert f'$extras {step} "$GPU_ADAPTERS"' in dockerfile
    assert re.search(r"^ARG GPU_ADAPTERS=$", dockerfile, re.MULTILINE)  # off by default
