"""The stack's secrets in `.env`: generated once when missing (and returned so that `make up`
prints them that once), never replaced, readable by the owner only, and exactly the ones the
generated compose file refers to."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from duplex.deploy.render import COMPOSE_FILE, render
from duplex.deploy.secrets import SECRETS, ensure_secrets, needed, read_env

from tests.unit.test_deploy_compose import stack


def test_missing_secrets_are_generated_once_and_kept(tmp_path: Path) -> None:
    """A first run writes every secret (mode 0600) and returns them; a second returns none
    and changes nothing."""
    env = tmp_path / ".env"
    names = needed(stack("two-gpus"))
    first = ensure_secrets(env, names)
    assert set(first) == set(names) and all(len(v) >= 24 for v in first.values())
    assert len(set(first.values())) == len(first)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    text = env.read_text()
    assert ensure_secrets(env, names) == {}
    assert env.read_text() == text and read_env(env) == first


def test_existing_values_and_other_lines_stay_and_empty_ones_are_filled(tmp_path: Path) -> None:
    """An operator's own key stays; `CONSOLE_ADMIN_TOKEN=` is filled in place; comments and
    other variables (process overrides) are untouched."""
    env = tmp_path / ".env"
    env.write_text("# mine\nAPI_KEYS=my-key\nDUPLEX_LOG_FORMAT=json\nCONSOLE_ADMIN_TOKEN=\n")
    new = ensure_secrets(env, ("API_KEYS", "CONSOLE_ADMIN_TOKEN", "CONSOLE_SESSION_SECRET"))
    assert set(new) == {"CONSOLE_ADMIN_TOKEN", "CONSOLE_SESSION_SECRET"}
    lines = env.read_text().splitlines()
    assert lines[:4] == ["# mine", "API_KEYS=my-key", "DUPLEX_LOG_FORMAT=json",
                         f"CONSOLE_ADMIN_TOKEN={new['CONSOLE_ADMIN_TOKEN']}"]  # fmt: skip
    assert lines[-1] == f"CONSOLE_SESSION_SECRET={new['CONSOLE_SESSION_SECRET']}"
    assert read_env(env)["API_KEYS"] == "my-key"


def test_the_compose_file_needs_exactly_the_secrets_make_up_provides() -> None:
    """Every ${VAR:?...} of the compose file is a secret `needed` returns, and back; Grafana's
    password only with monitoring. No generated file holds a secret's value."""
    for name, monitoring in (("two-gpus", True), ("hybrid", False)):
        plan = stack(name)
        files = render(plan)
        referenced = set(re.findall(r"\$\{(\w+):\?", files[COMPOSE_FILE]))
        assert referenced == set(needed(plan))
        assert ("GRAFANA_ADMIN_PASSWORD" in referenced) == monitoring
        assert referenced <= set(SECRETS)
