"""Structured logging shared by every process: one line per event, with its fields.

Fields come from `extra=` (`session_id`, `worker`, `model_id`, ...); messages stay constant
strings, so a log search or an aggregator never parses values out of prose.

Two renderings of the same record:

- JSON lines (`{"ts", "level", "logger", "msg", **fields}`) for files and containers;
- text for a person at a terminal: `HH:MM:SS.mmm LEVEL logger message key=value ...`, values
  quoted when they contain spaces, the level colored only when the stream is a terminal, a
  traceback on the lines below.

`DUPLEX_LOG_FORMAT` = `json` | `text` | `auto` (default) chooses; `auto` is text on a terminal,
JSON otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

LOG_FORMAT_ENV = "DUPLEX_LOG_FORMAT"
"""Environment variable that picks the format: json, text or auto."""

# Attributes every LogRecord has; anything else was passed through `extra=` and is a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# ANSI SGR colors per level (terminal only).
_COLORS = {
    logging.DEBUG: "\x1b[2m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_RESET = "\x1b[0m"


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of `record`, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, fields, exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # The record's own keys win: a field named like one is kept with a trailing "_".
        for key, value in record_fields(record).items():
            entry[f"{key}_" if key in entry else key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL logger message key=value ...` for a person reading a terminal."""

    def __init__(self, *, color: bool = False) -> None:
        super().__init__()
        self._color = color

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = f"{record.levelname:<7}"
        if self._color and record.levelno in _COLORS:
            level = f"{_COLORS[record.levelno]}{level}{_RESET}"
        parts = [f"{stamp}.{int(record.msecs):03d}", level, record.name]
        parts.append(_one_line(record.getMessage()))
        parts += [f"{key}={_text(value)}" for key, value in record_fields(record).items()]
        line = " ".join(parts)
        # A traceback reads best as it is, below the event's line.
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _text(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def use_json(
    stream: TextIO, env: Mapping[str, str], as_json: bool | None = None
) -> tuple[bool, str | None]:
    """Whether to write JSON to `stream`, and a complaint about `env` if its choice is invalid.

    An explicit `as_json` wins, then `DUPLEX_LOG_FORMAT`, then the terminal test.
    """
    if as_json is not None:
        return as_json, None
    choice = env.get(LOG_FORMAT_ENV, "").strip().lower()
    if choice == "json":
        return True, None
    if choice == "text":
        return False, None
    complaint = None
    if choice not in ("", "auto"):
        complaint = f"{LOG_FORMAT_ENV}={choice!r} is not json, text or auto"
    return not _isatty(stream), complaint


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def make_formatter(
    stream: TextIO, env: Mapping[str, str], as_json: bool | None = None
) -> tuple[logging.Formatter, str | None]:
    """The formatter `configure_logging` installs for `stream` (and any complaint about `env`)."""
    json_lines, complaint = use_json(stream, env, as_json)
    if json_lines:
        return JsonFormatter(), complaint
    # NO_COLOR (no-color.org): any non-empty value turns colors off.
    color = _isatty(stream) and not env.get("NO_COLOR")
    return TextFormatter(color=color), complaint


def configure_logging(
    level: str,
    *,
    as_json: bool | None = None,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Root logging to `stream` (stderr), one line per event, format as `make_formatter` picks.

    `env` defaults to the process environment; `as_json` overrides it (tests, tools).
    """
    out = sys.stderr if stream is None else stream
    formatter, complaint = make_formatter(out, os.environ if env is None else env, as_json)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own error logger is useful (bind failures); its access log is not.
    logging.getLogger("uvicorn.access").disabled = True
    if complaint is not None:
        logging.getLogger(__name__).warning(
            "unknown log format; using auto", extra={"problem": complaint}
        )


LOG_LEVEL_ENV = "DUPLEX_LOG_LEVEL"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """`--log-level` for every process's command line (default: $DUPLEX_LOG_LEVEL, else INFO)."""
    parser.add_argument(
        "--log-level",
        default=os.environ.get(LOG_LEVEL_ENV, "INFO"),
        choices=[*_LEVELS, *(level.lower() for level in _LEVELS)],
        help=f"log level (default %(default)s; env {LOG_LEVEL_ENV})",
    )
