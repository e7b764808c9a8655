"""`python -m duplex.orchestrator --config config/orchestrator.yaml`: run the orchestrator.

Logs go to stderr, one line per event with its fields: JSON when stderr is not a terminal,
`key=value` text when it is. SIGTERM and SIGINT stop it gracefully (live sessions get
`SessionEnded {reason: "shutdown"}`); exit status 0 after a clean stop, 2 on a bad
configuration, 1 when the server cannot start.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop

from duplex.asgiserver import serve_until_signalled
from duplex.logs import add_log_level_argument, configure_logging
from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import ENV_OVERRIDES, ConfigError, load_orchestrator_config

_LOG = logging.getLogger("duplex.orchestrator")
# Allocations before a young collection, then young collections per middle one and middle
# ones per full one (the defaults: 700, 10, 10).
_GC_THRESHOLDS = (10_000, 20, 10)


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
    add_log_level_argument(parser)
    return parser


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections. A session allocates objects for every 20 ms frame,
    and frames that wait in the pacer live long enough to reach the oldest generation, so
    with the defaults full collections of the whole heap come several times a second and
    stall every session's audio at once. Everything built at start-up is frozen out of the
    collector's sight, and young collections run less often. Ended sessions are cyclic
    garbage: the hub has them collected in small batches (`session/sweeper.py`)."""
    gc.collect()
    gc.freeze()
    # A full collection counts the objects that survive it, and the next automatic one waits
    # until a quarter as many again have aged: collected now, with start-up frozen, that
    # count is ~0 rather than the whole start-up heap (which held the first automatic full
    # collection back until a quarter of that many objects had aged).
    gc.collect()
    gc.set_threshold(*_GC_THRESHOLDS)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_orchestrator_config(args.config, os.environ)
    except ConfigError as exc:
        _LOG.error("invalid configuration: %s", exc)
        return 2
    server = OrchestratorServer(config)
    _tune_gc()
    # uvloop: about 1.5x the real-time sessions of asyncio's own loop in the capacity bench.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve_until_signalled(server, _LOG))


if __name__ == "__main__":
    sys.exit(main())
