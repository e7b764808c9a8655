"""Where the browser assets (the repository's `web/` folder) are on this machine.

In a checkout (editable install, tests, `make demo`) they are `web/` at the repository root.
A wheel carries them inside the package as `duplex/_web` (setup.py adds them to the build),
so an installed orchestrator, or an image built from the wheel, serves the same files.
"""

from __future__ import annotations

from pathlib import Path

# A file every complete copy of web/ has; a folder without it is not the assets.
_MARKER = Path("demo") / "index.html"


class WebAssetsNotFound(FileNotFoundError):
    """Neither a checkout's web/ nor the packaged copy is present."""


def web_root() -> Path:
    """The folder that holds `demo/index.html` (and the rest of `web/`).

    The packaged copy wins when both exist, so an installed package never serves files from
    whatever folder happens to sit two levels above it.
    """
    package = Path(__file__).resolve().parent
    candidates = (package / "_web", package.parents[1] / "web")
    for candidate in candidates:
        if (candidate / _MARKER).is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise WebAssetsNotFound(
        f"the browser assets (web/{_MARKER.as_posix()}) are missing; looked in: {looked}. "
        "Install from a wheel built from the repository, or run from a checkout."
    )
