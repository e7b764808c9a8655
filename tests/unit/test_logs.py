"""Structured logs: one formatter for every process, fields through `extra=`."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services" / "duplex"
_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def _log_calls(path: Path) -> list[ast.Call]:
    """Calls of `_LOG.<level>(...)` (the module loggers' name) in one source file."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOG_METHODS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "_LOG"
        ):
            calls.append(node)
    return calls


def test_worker_logs_carry_values_as_fields_not_inside_the_message() -> None:
    """Every worker log message is a constant string: no %-args, f-strings or key=value."""
    checked = 0
    for path in sorted((SERVICES / "worker").rglob("*.py")):
        for call in _log_calls(path):
            where = f"{path.relative_to(SERVICES)}:{call.lineno}"
            message = call.args[0] if call.args else None
            assert isinstance(message, ast.Constant), f"{where}: message is not a constant"
            assert isinstance(message.value, str), where
            assert len(call.args) == 1, f"{where}: %-style arguments"
            assert "=" not in message.value and "%" not in message.value, where
            checked += 1
    assert checked >= 20  # the scan found the worker's log calls
