"""Is it up yet? Small, deadline-bound checks of the product's processes (demo, tests, bench).

Each probe answers True/False (or a status) and never raises for a server that is down or
slow: it gives up at its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind `host:port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # The flag servers set, so that connections in TIME_WAIT do not count as "taken".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def probe_host(bind_host: str) -> str:
    """The address to reach a server bound to `bind_host` from this machine."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "::", "") else bind_host


async def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether a Redis at `url` answers PING."""
    client = aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        return bool(await client.ping())
    except (aioredis.RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def grpc_serving(target: str, timeout_s: float = 1.0) -> bool:
    """Whether the gRPC server at `target` ("host:port") reports SERVING (grpc.health.v1)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def http_status(host: str, port: int, path: str, timeout_s: float = 1.0) -> int | None:
    """The status code of `GET path`, or None when nothing answers in time.

    A raw request rather than urllib: urllib would honour http_proxy for a loopback address.
    """
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                writer.write(request.encode("ascii"))
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    parts = status_line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def python_imports(python: str, modules: str, timeout_s: float = 60.0) -> bool:
    """Whether `python -c "import <modules>"` succeeds (checked in a child process)."""
    proc = await asyncio.create_subprocess_exec(
        python,
        "-c",
        f"import {modules}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(timeout_s):
            return await proc.wait() == 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False
