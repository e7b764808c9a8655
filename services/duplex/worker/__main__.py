"""`python -m duplex.worker --config config/worker-gpu0.yaml`: run one TTS worker.

Exit status: 0 after a drain on SIGTERM / SIGINT, 1 when the worker cannot start (the
default model fails to load, the port is taken), 2 for an invalid configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from duplex.worker.app import WorkerApp, WorkerStartupError
from duplex.worker.config import ENV_OVERRIDES, ConfigError, WorkerConfig, load_worker_config

_LOG = logging.getLogger("duplex.worker")

# LogRecord attributes that are not `extra=` fields.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class OneLineFormatter(logging.Formatter):
    """One line per event: JSON when not on a terminal, `key=value` text on one."""

    def __init__(self, *, as_json: bool) -> None:
        super().__init__()
        self._json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self._json:
            return json.dumps(fields, default=str)
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("ts", "msg"))
        return f"{fields['ts']} {fields['msg']} {extra}".replace("\n", "\\n")


def configure_logging(level: str) -> None:
    """Root logging to stderr, one line per event."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(as_json=not sys.stderr.isatty()))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    overrides = ", ".join(ENV_OVERRIDES)
    parser = argparse.ArgumentParser(
        prog="python -m duplex.worker",
        description="Run one streaming TTS worker (gRPC) that announces itself in Redis.",
        epilog=f"Environment overrides: {overrides}.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="worker YAML (e.g. config/worker-gpu0.yaml); "
        "without it every required key must come from the environment",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: info)",
    )
    return parser.parse_args(argv)


async def serve(config: WorkerConfig) -> int:
    """Run until SIGTERM / SIGINT, then drain; returns the exit status."""
    app = WorkerApp(config)
    try:
        port = await app.start()
    except WorkerStartupError as exc:
        _LOG.error("worker failed to start: %s", exc)
        return 1
    _LOG.info("listening port=%d", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        _LOG.info("signal received, draining")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await app.drain_and_stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_worker_config(args.config, os.environ)
    except ConfigError as exc:
        _LOG.error("invalid configuration: %s", exc)
        return 2
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
