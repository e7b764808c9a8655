"""Every knob of `make up` is documented: the stack's secrets as .env assignments, the make
variables in .env.example's table and in docs/deployment.md, and the Makefile defines each."""

from __future__ import annotations

import re
from pathlib import Path

from duplex.deploy.__main__ import PORT_VARIABLES
from duplex.deploy.secrets import SECRETS
from duplex.deploy.variables import MAKE_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")


def _deploy_block() -> str:
    """The Makefile's production section (from its heading to the next one, or `clean:`)."""
    start = MAKEFILE.index("# ---- production:")
    ends = [MAKEFILE.find(mark, start + 1) for mark in ("\n# ---- ", "\nclean:")]
    return MAKEFILE[start : min(e for e in ends if e > 0)]


def test_every_secret_is_an_assignment_in_env_example() -> None:
    """.env is where make up keeps them: each shows as `# NAME=`."""
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE, re.MULTILINE))
    assert set(SECRETS) <= documented


def test_every_make_variable_is_documented_and_defined() -> None:
    """A row of .env.example's table, a mention in docs/deployment.md, and a definition in
    the Makefile's production section (the ports through DEPLOY_PORTS)."""
    rows = set(re.findall(r"^#   ([A-Z][A-Z0-9_]*) ", ENV_EXAMPLE, re.MULTILINE))
    assert set(MAKE_VARIABLES) == rows
    block = _deploy_block()
    defined = set(re.findall(r"^([A-Z][A-Z0-9_]*) \?=", block, re.MULTILINE))
    ports = set(re.search(r"^DEPLOY_PORTS := (.*)$", block, re.MULTILINE).group(1).split())  # type: ignore[union-attr]
    assert ports == set(PORT_VARIABLES.values())
    assert set(MAKE_VARIABLES) == defined | ports
    for name in MAKE_VARIABLES:
        assert f"`{name}" in GUIDE, f"docs/deployment.md does not mention {name}"


def test_the_deploy_targets_are_phony() -> None:
    """`config/` is also a folder: without .PHONY, `make config` would do nothing."""
    phony = re.search(r"^\.PHONY: (.*)$", _deploy_block(), re.MULTILINE)
    assert phony is not None
    assert set(phony.group(1).split()) == {"up", "down", "ps", "logs", "config", "systemd"}
    assert (ROOT / "config").is_dir()
