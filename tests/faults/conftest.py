"""The fault and soak suite's scale, and the figures it measures.

`make test` runs these tests in a shortened form; `make test-faults` sets
``DUPLEX_FAULTS_FULL=1`` for the full one (more messages, longer outages). Tests assert
what must hold; timings and memory are recorded with the `figures` fixture, printed at
the end of the run and written to ``out/faults/figures.json`` (``DUPLEX_FAULTS_FIGURES``
names another file), which the bench report's soak section picks up.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FULL_ENV = "DUPLEX_FAULTS_FULL"
FIGURES_ENV = "DUPLEX_FAULTS_FIGURES"
DEFAULT_FIGURES = Path(__file__).resolve().parents[2] / "out" / "faults" / "figures.json"


@dataclass(frozen=True)
class FaultScale:
    """How hard each fault test pushes: short under `make test`, full under `make test-faults`."""

    full: bool
    flood_messages: int
    flood_connections: int
    redis_outage_s: float

    @classmethod
    def from_env(cls) -> FaultScale:
        if os.environ.get(FULL_ENV) == "1":
            return cls(full=True, flood_messages=10_000, flood_connections=50, redis_outage_s=10.0)
        return cls(full=False, flood_messages=1_500, flood_connections=15, redis_outage_s=3.0)


class Figures:
    """Named figures of the run, by test: printed at the end and written as JSON."""

    def __init__(self) -> None:
        self.by_test: dict[str, dict[str, Any]] = {}

    def record(self, test: str, **values: Any) -> None:
        self.by_test.setdefault(test, {}).update(values)


_FIGURES = pytest.StashKey[Figures]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = Figures()


@pytest.fixture(scope="session")
def scale() -> FaultScale:
    return FaultScale.from_env()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Any]:
    """``figures(name=value, ...)`` records this test's figures."""
    store = request.config.stash[_FIGURES]
    name = request.node.name

    def record(**values: Any) -> None:
        store.record(name, **values)

    yield record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    store = config.stash.get(_FIGURES, None)
    if store is None or not store.by_test:
        return
    scale = FaultScale.from_env()
    terminalreporter.section(f"fault suite figures ({'full' if scale.full else 'short'} form)")
    for test, values in store.by_test.items():
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        terminalreporter.write_line(f"{test}: {shown}")
    path = Path(os.environ.get(FIGURES_ENV) or DEFAULT_FIGURES)
    path.parent.mkdir(parents=True, exist_ok=True)
    form = "full" if scale.full else "short"
    tests: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("form") == form:
                tests = dict(old.get("tests", {}))
        except (OSError, ValueError):
            pass
    tests.update(store.by_test)
    report = {"form": form, "at": time.time(), "tests": tests}
    path.write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
    terminalreporter.write_line(f"written to {path}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
