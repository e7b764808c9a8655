"""`python -m duplex.console --config config/console.yaml`: run the operator console.

Logs go to stderr, one line per event with its fields (JSON when stderr is not a terminal).
SIGTERM and SIGINT stop it gracefully; exit status 0 after a clean stop, 2 on a bad
configuration (a non-loopback bind without an admin token among them), 1 when the server
cannot start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from duplex.asgiserver import serve_until_signalled
from duplex.console.app import ConsoleServer
from duplex.console.config import ConfigError, load_console_config
from duplex.logs import add_log_level_argument, configure_logging

_LOG = logging.getLogger("duplex.console")

_ENV_HELP = """\
environment (each overrides the file; an empty variable means "not set"):
  CONSOLE_ADMIN_TOKEN     the admin token an operator signs in with (required unless bound
                          to loopback; without it nobody can sign in or act)
  CONSOLE_SESSION_SECRET  signs the session cookie; unset: a random secret per process,
                          so sign-ins end when the console restarts
  CONSOLE_HOST            console.host (default 127.0.0.1)
  CONSOLE_PORT            console.port (default 8000)
  CONSOLE_DEMO_URL        console.demo_url, the mic demo link
  CONSOLE_GRAFANA_URL     console.grafana_url, the Grafana link
  REDIS_URL               redis.url, the registry
  DUPLEX_WORKER_TTL_MS    redis.worker_ttl_ms, when a silent worker is gone
  DUPLEX_LOG_LEVEL        the log level
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m duplex.console",
        description="Run the duplex operator console: workers, GPUs, routing and sessions "
        "from Redis at http://HOST:PORT/, actions behind a sign-in with the admin token, "
        "plus GET /health and /metrics.",
        epilog=_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="console YAML (config/console.yaml); defaults apply when omitted",
    )
    add_log_level_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_console_config(args.config, os.environ)
        server = ConsoleServer(config)
    except ConfigError as exc:
        _LOG.error("invalid configuration: %s", exc)
        return 2
    return asyncio.run(serve_until_signalled(server, _LOG))


if __name__ == "__main__":
    sys.exit(main())
