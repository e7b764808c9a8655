"""Child processes that a supervisor (the demo) starts, watches, echoes and stops."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping, Sequence


class Child:
    """A child process whose output is echoed with its name; stopped with a deadline."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, say: Callable[[str], None]
    ) -> None:
        self.name = name
        self.process = process
        self._pump = asyncio.create_task(self._echo(say), name=f"echo-{name}")
        self.exited = asyncio.create_task(process.wait(), name=f"wait-{name}")

    @classmethod
    async def spawn(
        cls, name: str, argv: Sequence[str], env: Mapping[str, str], say: Callable[[str], None]
    ) -> Child:
        """Start `argv` in its own session (a terminal's Ctrl-C does not reach it)."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            limit=1 << 20,
        )
        return cls(name, process, say)

    @property
    def exit_status(self) -> str:
        """How it ended, in words ("exit code 1", "signal SIGKILL")."""
        code = self.process.returncode
        if code is None:
            return "no exit status"
        if code < 0:
            return f"signal {signal.Signals(-code).name}"
        return f"exit code {code}"

    async def _echo(self, say: Callable[[str], None]) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            say(f"{self.name:<14}| {line.decode('utf-8', 'replace').rstrip()}")

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL; returns once the process is gone."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                async with asyncio.timeout(timeout_s):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._pump  # the last lines of output, then EOF
        self._pump.cancel()
        await asyncio.gather(self._pump, self.exited, return_exceptions=True)
