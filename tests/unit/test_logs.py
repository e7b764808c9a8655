"""Structured logs: one formatter for every process, fields through `extra=`."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from duplex.logs import JsonFormatter, TextFormatter, configure_logging, make_formatter

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


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


_TEXT_LINE = re.compile(
    r"^(?P<time>\d\d:\d\d:\d\d\.\d{3}) (?P<level>[A-Z]+) +(?P<logger>\S+) (?P<rest>.*)$"
)
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "duplex.worker.test", "levelno": logging.INFO, "levelname": "INFO"}
    )
    record.msg = "session opened"
    record.__dict__.update(extra)
    return record


def _text_fields(line: str) -> dict[str, str]:
    match = _TEXT_LINE.match(line)
    assert match, line
    return {k: json.loads(v) if v.startswith('"') else v for k, v in _PAIR.findall(line)}


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restore the root logger after a test that configures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_and_text_carry_the_same_fields() -> None:
    """Both renderings of one record show the message and every extra= field with its value."""
    extra = {"session_id": "s-1", "worker": "tts piper@0", "model_id": "piper-en", "lead_ms": 40}
    record = _record(**extra)
    entry = json.loads(JsonFormatter().format(record))
    line = TextFormatter().format(record)
    assert entry["msg"] == "session opened" and entry["level"] == "info"
    assert entry["logger"] == "duplex.worker.test"
    assert {k: entry[k] for k in extra} == extra
    assert "session opened" in line and "\n" not in line
    assert _text_fields(line) == {k: str(v) for k, v in extra.items()}


def test_text_is_time_level_logger_message_then_fields() -> None:
    """The text line reads `HH:MM:SS.mmm LEVEL logger message key=value`, spaces quoted."""
    line = TextFormatter().format(_record(worker="a b", empty=""))
    match = _TEXT_LINE.match(line)
    assert match and match["level"] == "INFO" and match["logger"] == "duplex.worker.test"
    assert match["rest"] == 'session opened worker="a b" empty=""'


def test_both_formats_include_the_exception() -> None:
    """An exception logged with exc_info appears in JSON (`exc`) and in text (below the line)."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(session_id="s-2")
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in entry["exc"] and entry["session_id"] == "s-2"
    first, *rest = TextFormatter().format(record).splitlines()
    assert _text_fields(first) == {"session_id": "s-2"}
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"


def test_a_field_named_like_a_json_key_does_not_replace_it() -> None:
    """extra={"level": ...} is kept as level_, so the record's level still reads right."""
    entry = json.loads(JsonFormatter().format(_record(level="loud")))
    assert (entry["level"], entry["level_"]) == ("info", "loud")


def test_a_message_with_a_newline_stays_on_one_line_in_text() -> None:
    """Text mode escapes newlines in the message so one event stays one line."""
    record = _record()
    record.msg = "two\nlines"
    assert TextFormatter().format(record).endswith("two\\nlines")


@pytest.mark.parametrize(
    ("stream", "env", "as_json", "expected"),
    [
        (io.StringIO(), {}, None, JsonFormatter),  # a file or a pipe: JSON
        (_Terminal(), {}, None, TextFormatter),  # a terminal: text
        (_Terminal(), {"DUPLEX_LOG_FORMAT": "json"}, None, JsonFormatter),
        (io.StringIO(), {"DUPLEX_LOG_FORMAT": "text"}, None, TextFormatter),
        (io.StringIO(), {"DUPLEX_LOG_FORMAT": "auto"}, None, JsonFormatter),
        (io.StringIO(), {"DUPLEX_LOG_FORMAT": "text"}, True, JsonFormatter),  # argument wins
    ],
)
def test_the_format_follows_the_terminal_unless_chosen(
    stream: io.StringIO, env: dict[str, str], as_json: bool | None, expected: type
) -> None:
    """auto: text on a terminal, JSON elsewhere; DUPLEX_LOG_FORMAT and as_json choose."""
    formatter, complaint = make_formatter(stream, env, as_json)
    assert type(formatter) is expected and complaint is None


def test_an_unknown_format_choice_is_reported_and_auto_used() -> None:
    """DUPLEX_LOG_FORMAT=yaml falls back to the terminal test, with a complaint naming it."""
    formatter, complaint = make_formatter(io.StringIO(), {"DUPLEX_LOG_FORMAT": "yaml"})
    assert isinstance(formatter, JsonFormatter)
    assert complaint is not None and "DUPLEX_LOG_FORMAT" in complaint and "yaml" in complaint


def test_the_level_is_colored_only_on_a_terminal() -> None:
    """Text on a terminal colors the level; text to a file and NO_COLOR have no escapes."""
    colored, _ = make_formatter(_Terminal(), {})
    to_file, _ = make_formatter(io.StringIO(), {"DUPLEX_LOG_FORMAT": "text"})
    no_color, _ = make_formatter(_Terminal(), {"NO_COLOR": "1"})
    record = _record(worker="w")
    assert "\x1b[" in colored.format(record)
    assert "\x1b[" not in to_file.format(record)
    assert "\x1b[" not in no_color.format(record)


def test_configure_logging_writes_fields_to_the_stream(root_logging: None) -> None:
    """configure_logging(level) keeps its callers' signature; records carry their fields."""
    out = io.StringIO()
    configure_logging("info", stream=out, env={})
    logging.getLogger("duplex.worker.test").debug("hidden")
    logging.getLogger("duplex.worker.test").info("model loaded", extra={"model_id": "m1"})
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["model_id"] == "m1"


def test_configure_logging_warns_about_an_unknown_format(root_logging: None) -> None:
    """An invalid DUPLEX_LOG_FORMAT does not stop the process; it is logged as a warning."""
    out = _Terminal()
    configure_logging("info", stream=out, env={"DUPLEX_LOG_FORMAT": "xml", "NO_COLOR": "1"})
    (line,) = out.getvalue().splitlines()
    assert " WARNING " in line and "DUPLEX_LOG_FORMAT" in line
