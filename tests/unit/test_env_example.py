""".env.example documents exactly the environment overrides the two config loaders read."""

from __future__ import annotations

import re
from pathlib import Path

from duplex.orchestrator.config import ENV_OVERRIDES as ORCHESTRATOR_OVERRIDES
from duplex.worker.config import ENV_OVERRIDES as WORKER_OVERRIDES

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
_ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def _documented() -> list[str]:
    return _ASSIGNMENT.findall(ENV_EXAMPLE.read_text(encoding="utf-8"))


def test_every_override_of_worker_and_orchestrator_is_documented() -> None:
    """Each variable in either ENV_OVERRIDES appears in .env.example."""
    missing = (set(WORKER_OVERRIDES) | set(ORCHESTRATOR_OVERRIDES)) - set(_documented())
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_example_names_no_variable_that_nothing_reads() -> None:
    """Every variable .env.example shows is one a loader reads, and each appears once."""
    documented = _documented()
    unknown = set(documented) - set(WORKER_OVERRIDES) - set(ORCHESTRATOR_OVERRIDES)
    assert not unknown, f".env.example shows variables no loader reads: {sorted(unknown)}"
    assert len(documented) == len(set(documented))
