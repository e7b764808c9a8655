"""`python -m duplex.orchestrator --config config/orchestrator.yaml`: run the orchestrator.

Logs go to stderr, one line per event with its fields: JSON when stderr is not a terminal,
`key=value` text when it is. SIGTERM and SIGINT stop it gracefully (live sessions get
`SessionEnded {reason: "shutdown"}`); exit status 0 after a clean stop, 2 on a bad
configuration, 1 when the server cannot start.
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

from duplex.asgiserver import ServerStartError
from duplex.logs import configure_logging
from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import ENV_OVERRIDES, ConfigError, load_orchestrator_config

_LOG = logging.getLogger("duplex.orchestrator")


def _parser() -> argparse.ArgumentParser:
    overrides = ", ".join(ENV_OVERRIDES)
    parser = argparse.ArgumentParser(
        prog="python -m duplex.orchestrator",
        description="Run the duplex orchestrator: a WebSocket API at ws://HOST:PORT/ that "
        "routes each session to a TTS worker found in Redis, plus GET /health, /ready and "
        "/metrics on the same port.",
        epilog=f"Environment overrides: {overrides}.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="orchestrator YAML (the deployment guide's keys); defaults apply when omitted",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("DUPLEX_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"],
        help="log level (default %(default)s; env DUPLEX_LOG_LEVEL)",
    )
    return parser


async def _run(server: OrchestratorServer) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await server.start()
        except ServerStartError as exc:
            _LOG.error("cannot start: %s", exc)
            return 1
        _LOG.info("serving", extra={"url": server.url, "http": server.http_url})
        stopping = asyncio.create_task(stop.wait())
        ended = asyncio.create_task(server.wait())
        try:
            await asyncio.wait({stopping, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            ended.cancel()
        _LOG.info("stopping")
        await server.stop()
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_orchestrator_config(args.config, os.environ)
    except ConfigError as exc:
        _LOG.error("invalid configuration: %s", exc)
        return 2
    server = OrchestratorServer(config)
    return asyncio.run(_run(server))


if __name__ == "__main__":
    sys.exit(main())
