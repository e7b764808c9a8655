"""Build hook only; the project is described in pyproject.toml.

The browser assets live in `web/` at the repository root (beside `services/`), and setuptools
names packages after their folders, so pyproject.toml alone cannot put them inside `duplex`.
This adds them to build_py's data files as `duplex/_web/...`: wheels carry them, sdists carry
`web/`, and `duplex.webassets.web_root()` finds either copy. Editable installs read `web/` in
place.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

WEB = Path("web")
PACKAGE = ("duplex", "_web")


class BuildPyWithWeb(build_py):
    """build_py that also copies web/ into the package as duplex/_web."""

    def _get_data_files(self):  # type: ignore[no-untyped-def]
        return [*super()._get_data_files(), self._web_files()]

    def get_data_files_without_manifest(self):  # type: ignore[no-untyped-def]
        return [*super().get_data_files_without_manifest(), self._web_files()]

    def _web_files(self) -> tuple[str, str, str, list[str]]:
        names = sorted(
            p.relative_to(WEB).as_posix()
            for p in WEB.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        return (".".join(PACKAGE), str(WEB), str(Path(self.build_lib, *PACKAGE)), names)


setup(cmdclass={"build_py": BuildPyWithWeb})
