"""The containers' healthcheck, `python -m duplex.deploy.probe`: exit 0 only when the process
really answers (a SERVING gRPC health, an HTTP 200), 1 otherwise."""

from __future__ import annotations

import asyncio
import socket

import grpc
from duplex.deploy.probe import main
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_grpc_probe_follows_the_health_status() -> None:
    """NOT_SERVING (a worker loading its model): 1; SERVING: 0; nothing listening: 1."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        target = f"127.0.0.1:{port}"
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await asyncio.to_thread(main, ["grpc", target]) == 1
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert await asyncio.to_thread(main, ["grpc", target]) == 0
    finally:
        await server.stop(None)
    assert await asyncio.to_thread(main, ["--timeout", "1", "grpc", target]) == 1


async def test_http_probe_wants_a_200() -> None:
    """200 on the path: 0; 503 (not ready): 1; nothing listening: 1."""
    statuses = {"/ready": b"503 Service Unavailable", "/health": b"200 OK"}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = (await reader.readline()).split()[1].decode()
        writer.write(b"HTTP/1.1 " + statuses[path] + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await asyncio.to_thread(main, ["http", f"127.0.0.1:{port}", "/health"]) == 0
        assert await asyncio.to_thread(main, ["http", f"127.0.0.1:{port}", "/ready"]) == 1
    closed = f"127.0.0.1:{free_port()}"
    assert await asyncio.to_thread(main, ["--timeout", "1", "http", closed, "/health"]) == 1
