"""The compose file is validated offline against the Compose specification's schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checker() -> str:
    found = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert found, "check-jsonschema is part of the dev extras (make venv)"
    return found


def test_compose_file_matches_the_compose_spec_schema() -> None:
    """compose/docker-compose.yml passes the builtin compose-spec schema."""
    result = subprocess.run(
        [
            _checker(),
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "compose/docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    """The check is real: a service with a malformed ports entry is rejected."""
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  redis:\n    image: redis:7\n    ports: 6379\n")
    result = subprocess.run(
        [_checker(), "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
