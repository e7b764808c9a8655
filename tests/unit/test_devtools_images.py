"""The image helpers' pure parts: the wheel set's marker closure and the apt mirror lookup."""

from __future__ import annotations

import zipfile
from pathlib import Path

from duplex.devtools.docker import DEFAULT_MIRROR, apt_mirror
from duplex.devtools.wheels import _closure, _index, series_environments
from packaging.requirements import Requirement


def _wheel(folder: Path, name: str, version: str, *requires: str) -> None:
    """A wheel with only its METADATA: all the closure reads."""
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    dist = f"{name.replace('-', '_')}-{version}"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{dist}.dist-info/METADATA", meta)


def test_the_environments_span_the_whole_minor_series() -> None:
    """First release, this one, and the last: a marker on the patch release is caught."""
    versions = [e["python_full_version"] for e in series_environments("3.11.7")]
    assert versions == ["3.11.0", "3.11.7", "3.11.99"]
    assert {e["python_version"] for e in series_environments("3.11.7")} == {"3.11"}


def test_a_dependency_only_older_releases_need_is_in_the_closure(tmp_path: Path) -> None:
    """redis needs async-timeout below 3.11.3 (Debian 12's 3.11.2): pip on a newer Python
    leaves it out, the closure for the series keeps it; another platform's stays out."""
    _wheel(
        tmp_path,
        "redis",
        "8.1.0",
        'async-timeout>=4; python_full_version < "3.11.3"',
        'pywin32; sys_platform == "win32"',
        'hiredis; extra == "hiredis"',
    )
    names = _closure(_index(tmp_path), [Requirement("redis>=5")], series_environments("3.11.7"))
    assert names == {"redis", "async-timeout"}


def test_an_extra_asked_for_brings_its_dependencies(tmp_path: Path) -> None:
    _wheel(tmp_path, "app", "1.0", 'voice; extra == "ja"')
    _wheel(tmp_path, "voice", "0.1", "onnx")
    envs = series_environments("3.11.7")
    assert _closure(_index(tmp_path), [Requirement("app")], envs) == {"app"}
    assert _closure(_index(tmp_path), [Requirement("app[ja]")], envs) == {"app", "voice", "onnx"}


def test_the_mirror_comes_from_apt_sources_in_either_format(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    one_line = tmp_path / "sources.list"
    one_line.write_text("deb http://other.example/debian/ bookworm main\n")
    other = tmp_path / "node.list"
    other.write_text("deb https://deb.nodesource.com/node_20.x nodistro main\n")
    assert apt_mirror([other, deb822]) == "http://mirror.example/debian"
    assert apt_mirror([one_line]) == "http://other.example/debian"
    assert apt_mirror([other, tmp_path / "missing.list"]) == DEFAULT_MIRROR
