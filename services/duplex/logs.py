"""Structured logging shared by every process: one line per event, with its fields.

JSON when stderr is not a terminal (for log aggregation), `key=value` text when it is.
Fields come from `extra=` (`session_id`, `worker`, `model_id`, ...).
"""

from __future__ import annotations

import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else was passed through `extra=` and is a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class StructuredFormatter(logging.Formatter):
    """One line per record: the message plus its `extra` fields (JSON or key=value)."""

    def __init__(self, *, as_json: bool) -> None:
        super().__init__()
        self._json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        message = record.getMessage()
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self._json:
            entry = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": message,
                **fields,
            }
            return json.dumps(entry, default=str)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        pairs = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {message}"
        return f"{line} {pairs}".rstrip().replace("\n", "\\n")


def _text(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def configure_logging(level: str, *, as_json: bool | None = None) -> None:
    """Root logging to stderr, one line per event."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        StructuredFormatter(as_json=not sys.stderr.isatty() if as_json is None else as_json)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own error logger is useful (bind failures); its access log is not.
    logging.getLogger("uvicorn.access").disabled = True
