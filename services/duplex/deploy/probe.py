"""Container healthchecks that really ask the process (exit 0: healthy, 1: not):

    python -m duplex.deploy.probe grpc 127.0.0.1:7001          # grpc.health.v1: SERVING
    python -m duplex.deploy.probe http 127.0.0.1:8080 /ready   # HTTP 200

The worker is SERVING only once its default model is loaded; the orchestrator's /ready is 200
once Redis answers and a worker is routable; the console's /health is 200 while it serves.
Also the grpcurl-free way to check a worker by hand (docs/deployment.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from duplex.devtools.probes import grpc_serving, http_status

TIMEOUT_S = 3.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m duplex.deploy.probe", description="Health probe for a duplex process."
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    grpc = kinds.add_parser("grpc", help="grpc.health.v1 Check: exit 0 when SERVING")
    grpc.add_argument("target", help="host:port")
    http = kinds.add_parser("http", help="GET a path: exit 0 on 200")
    http.add_argument("target", help="host:port")
    http.add_argument("path", help="e.g. /ready or /health")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds (default 3)")
    return parser


async def _probe(args: argparse.Namespace) -> bool:
    if args.kind == "grpc":
        return await grpc_serving(args.target, timeout_s=args.timeout)
    host, _, port = args.target.rpartition(":")
    status = await http_status(host, int(port), args.path, timeout_s=args.timeout)
    return status == 200


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    healthy = asyncio.run(_probe(args))
    print(f"{args.kind} {args.target}: {'healthy' if healthy else 'NOT healthy'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
