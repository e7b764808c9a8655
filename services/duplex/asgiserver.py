"""An ASGI app under uvicorn in the current event loop: how the orchestrator and the console
start and stop their HTTP servers (the CLIs and the tests use the same code).

uvicorn's own signal handling is off (the caller decides what a signal means), a failure to
bind or to run the lifespan becomes `ServerStartError` instead of `sys.exit()`, and a
`before_shutdown` hook runs before uvicorn drops live connections (the orchestrator says
goodbye to its sessions there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal, Protocol

import uvicorn
from starlette.types import ASGIApp

_LOG = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


class ServerStartError(RuntimeError):
    """uvicorn could not start (port taken, lifespan failure)."""


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, before_shutdown: Hook | None) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            await self._before_shutdown()
        await super().shutdown(sockets)


class InProcessServer:
    """One uvicorn server for ``app``; `port` 0 picks a free port (`port` tells it after
    `start()`). Keyword arguments go to `uvicorn.Config` (ssl_certfile, ws_max_size, ...)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        lifespan: Literal["on", "off"] = "on",
        before_shutdown: Hook | None = None,
        name: str = "uvicorn",
        **options: Any,
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan=lifespan,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            **options,
        )
        self._server = _Uvicorn(config, before_shutdown)
        self._name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    @property
    def host(self) -> str:
        return str(self._server.config.host)

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", [])
        if not self._server.started or not servers:
            raise RuntimeError("the server is not started")
        return int(servers[0].sockets[0].getsockname()[1])

    @property
    def local_host(self) -> str:
        """The host to reach it from this machine (127.0.0.1 for a wildcard address)."""
        return self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"

    async def start(self, timeout_s: float = 15.0) -> None:
        """Start serving; returns once the port is bound, raises ServerStartError if not."""
        if self._task is not None:
            raise RuntimeError("already started")
        task = self._task = asyncio.create_task(self._serve(), name=self._name)
        try:
            async with asyncio.timeout(timeout_s):
                # uvicorn offers no startup event; `started` flips once the port is bound.
                while not self._server.started:
                    if task.done():
                        await task  # raises its ServerStartError
                        raise ServerStartError(f"{self._name} exited during startup")
                    await asyncio.sleep(0.02)
        except BaseException:
            self._task = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ServerStartError):
                await task
            raise

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exc:
            # uvicorn calls sys.exit() when it cannot bind or the lifespan fails; that must
            # not escape a task (asyncio would re-raise it out of the event loop).
            raise ServerStartError(f"uvicorn could not start (exit status {exc.code})") from None

    async def wait(self) -> None:
        """Until the server stops (after `request_stop()` or `stop()`)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    def request_stop(self) -> None:
        """Ask uvicorn to shut down gracefully (safe from a signal handler callback)."""
        self._server.should_exit = True

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop within ``timeout_s``, then a forced one."""
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        try:
            async with asyncio.timeout(timeout_s):
                await task
        except TimeoutError:
            _LOG.error("server did not stop in time; cancelling", extra={"server": self._name})
            self._server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except ServerStartError:
            pass


class Serving(Protocol):
    """A server a command-line entry point runs (the orchestrator's, the console's)."""

    @property
    def url(self) -> str: ...

    async def start(self, timeout_s: float = 15.0) -> None: ...

    async def wait(self) -> None: ...

    async def stop(self, timeout_s: float = 30.0) -> None: ...


async def serve_until_signalled(server: Serving, log: logging.Logger) -> int:
    """Start ``server``, serve until SIGTERM/SIGINT or until it stops by itself, then stop it
    gracefully. 0 when stopped, 1 when it could not start."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await server.start()
        except ServerStartError as exc:
            log.error("cannot start", extra={"error": str(exc)})
            return 1
        log.info("serving", extra={"url": server.url})
        stopping = asyncio.create_task(stop.wait())
        ended = asyncio.create_task(server.wait())
        try:
            await asyncio.wait({stopping, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            ended.cancel()
        log.info("stopping")
        await server.stop()
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
