"""The local model directory that a GPU adapter loads its weights from (no downloads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def require_model_dir(
    model_id: str,
    model_dir: str | None,
    *,
    env_var: str,
    required: Sequence[str],
    holds: str,
) -> Path:
    """`model_dir` as a Path once it exists and has every `required` file, else
    FileNotFoundError naming the missing piece. `holds` names the layout in that message
    (e.g. "an XTTS directory"); `env_var` is where an operator sets the directory."""
    if not model_dir:
        raise FileNotFoundError(
            f"{model_id}: no model directory configured (model_manager.model_dirs or "
            f"{env_var}); see README, 'Bringing GPU model weights'"
        )
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{model_id}: model directory {root} does not exist")
    for name in required:
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{model_id}: {root / name} is missing; {holds} holds {', '.join(required)}"
            )
    return root
