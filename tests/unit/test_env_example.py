""".env.example documents every environment override the two config loaders read, and only
variables that something reads."""

from __future__ import annotations

import re
from pathlib import Path

from duplex.console.config import ENV_OVERRIDES as CONSOLE_OVERRIDES
from duplex.deploy.secrets import SECRETS
from duplex.logs import LOG_FORMAT_ENV
from duplex.orchestrator.config import ENV_OVERRIDES as ORCHESTRATOR_OVERRIDES
from duplex.worker.config import ENV_OVERRIDES as WORKER_OVERRIDES

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
_ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)

# Variables read outside the config loaders that .env.example may document, each named by the
# constant its reader defines (so a renamed variable fails here too).
NON_CONFIG_VARIABLES = frozenset({LOG_FORMAT_ENV})


def _documented() -> list[str]:
    return _ASSIGNMENT.findall(ENV_EXAMPLE.read_text(encoding="utf-8"))


def test_every_override_of_worker_and_orchestrator_is_documented() -> None:
    """Each variable in either ENV_OVERRIDES appears in .env.example."""
    missing = (set(WORKER_OVERRIDES) | set(ORCHESTRATOR_OVERRIDES)) - set(_documented())
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_example_names_no_variable_that_nothing_reads() -> None:
    """Every variable .env.example shows is an override a loader reads or a known non-config
    variable (the log format), and each appears once."""
    documented = _documented()
    read = (
        set(WORKER_OVERRIDES)
        | set(ORCHESTRATOR_OVERRIDES)
        | set(CONSOLE_OVERRIDES)
        | NON_CONFIG_VARIABLES
        | frozenset(SECRETS)
    )
    unknown = set(documented) - read
    assert not unknown, f".env.example shows variables nothing reads: {sorted(unknown)}"
    assert len(documented) == len(set(documented))


def test_non_config_variables_are_documented_and_no_loader_claims_them() -> None:
    """The log format variable is shown in .env.example and is not also a config override."""
    missing = NON_CONFIG_VARIABLES - set(_documented())
    assert not missing, f".env.example lacks {sorted(missing)}"
    assert not NON_CONFIG_VARIABLES & (set(WORKER_OVERRIDES) | set(ORCHESTRATOR_OVERRIDES))
