"""`python -m duplex.worker --config config/worker-gpu0.yaml`: run one TTS worker.

Exit status: 0 after a drain on SIGTERM / SIGINT, 1 when the worker cannot start (the
default model fails to load, the port is taken), 2 for an invalid configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop

from duplex.logs import add_log_level_argument, configure_logging
from duplex.worker.app import WorkerApp, WorkerStartupError
from duplex.worker.config import ENV_OVERRIDES, ConfigError, WorkerConfig, load_worker_config

_LOG = logging.getLogger("duplex.worker")


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
    add_log_level_argument(parser)
    return parser.parse_args(argv)


async def serve(config: WorkerConfig) -> int:
    """Run until SIGTERM / SIGINT, then drain; returns the exit status."""
    app = WorkerApp(config)
    try:
        port = await app.start()
    except WorkerStartupError as exc:
        _LOG.error("worker failed to start", extra={"error": str(exc)})
        return 1
    _LOG.info("listening", extra={"worker": config.worker.name, "port": port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        _LOG.info("signal received, draining", extra={"worker": config.worker.name})
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
        _LOG.error("invalid configuration", extra={"config": str(args.config), "error": str(exc)})
        return 2
    # uvloop: asyncio's own loop was about half of a tone worker's CPU at 100+ streams;
    # grpc.aio runs on whichever loop is running.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
