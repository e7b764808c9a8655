"""A headless Chromium (Debian's) driven over the DevTools protocol, for page tests.

    async with open_chromium(tmp_path, fake_mic=wav, host_rules=["MAP demo.test 127.0.0.1"]) as b:
        await b.navigate("http://demo.test:8080/?processing=0")
        await b.wait_for("window.duplexDemo && window.duplexDemo.ready")
        await b.screenshot(tmp_path / "page.png")

One browser, one page, a fresh profile in `tmp_dir`. The flags are the ones
../shared/FIELD_NOTES.md found to work here (fake mic from a WAV, loopback ICE candidates,
autoplay). Every wait has a deadline, and the browser's whole process group is killed on exit
whatever happened. Nothing but `websockets` and the standard library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "out" / "screenshots"  # gitignored; for a person to look at
START_LIMIT_S = 20.0
CALL_LIMIT_S = 15.0
WINDOW = (1280, 900)

BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # Without it Chromium gathers no ICE candidates on loopback and a call never connects.
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--password-store=basic",
    "--hide-scrollbars",
)


def chromium_path() -> str | None:
    """DUPLEX_CHROMIUM, else Debian's /usr/bin/chromium, else one on PATH."""
    configured = os.environ.get("DUPLEX_CHROMIUM")
    if configured:
        return configured
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The browser's path; skips the test (saying how to install it) when there is none."""
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed: `make browser` installs Debian's chromium")
    return path


class CdpError(RuntimeError):
    """A DevTools command failed, or the page threw."""


class BrowserError(RuntimeError):
    """The browser did not start, or died."""


@dataclass
class PageLog:
    """What the page printed and threw, kept to explain a failure."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)
        del self.lines[:-200]

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:]) or "(the page logged nothing)"


class _Cdp:
    """One DevTools WebSocket: numbered calls matched to replies, events to the log."""

    def __init__(self, ws: ClientConnection, log: PageLog) -> None:
        self._ws = ws
        self._log = log
        self._next = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        limit_s: float = CALL_LIMIT_S,
    ) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = reply
        try:
            await self._ws.send(json.dumps(message))
            async with asyncio.timeout(limit_s):
                answer = await reply
        except TimeoutError:
            raise CdpError(f"{method}: no reply within {limit_s:.0f} s") from None
        finally:
            self._pending.pop(ident, None)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error'].get('message')}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                ident = message.get("id")
                if ident is not None:
                    waiter = self._pending.get(ident)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
                else:
                    self._event(message.get("method", ""), message.get("params", {}))
        finally:
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(BrowserError("the DevTools connection closed"))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self._log.add(f"console.{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self._log.add(f"exception: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self._log.add(f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class Browser:
    """One page of a running Chromium."""

    def __init__(self, cdp: _Cdp, session: str, log: PageLog) -> None:
        self._cdp = cdp
        self._session = session
        self.log = log

    async def call(
        self, method: str, params: dict[str, Any] | None = None, limit_s: float = CALL_LIMIT_S
    ) -> dict[str, Any]:
        """A DevTools command on this page."""
        return await self._cdp.call(method, params, session=self._session, limit_s=limit_s)

    async def navigate(self, url: str, *, limit_s: float = CALL_LIMIT_S) -> None:
        """Load `url` and wait until the document is complete; a failed load raises (e.g.
        "net::ERR_CERT_AUTHORITY_INVALID")."""
        # A mark on the old document: the wait below must not be satisfied by it.
        await self.evaluate("window.__leaving = true")
        result = await self.call("Page.navigate", {"url": url}, limit_s)
        if result.get("errorText"):
            raise CdpError(f"loading {url} failed: {result['errorText']}")
        await self.wait_for(
            "!window.__leaving && document.readyState === 'complete'",
            limit_s=limit_s,
            what=f"{url} to load",
        )

    async def evaluate(self, expression: str, *, limit_s: float = CALL_LIMIT_S) -> Any:
        """The value of a JavaScript expression (promises awaited, results as JSON values)."""
        result = await self.call(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "userGesture": True,  # clicks and play() behave as if a person did them
                "timeout": int(limit_s * 1000),
            },
            limit_s + 1,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression!r} threw: {text}")
        return result.get("result", {}).get("value")

    async def wait_for(
        self,
        expression: str,
        *,
        limit_s: float = CALL_LIMIT_S,
        every_s: float = 0.05,
        what: str | None = None,
        explain: str | None = None,
    ) -> Any:
        """Poll `expression` until it is truthy; returns that value. Fails with the page's
        log (and the value of `explain`, an expression showing the page's state) when the
        deadline passes."""
        try:
            async with asyncio.timeout(limit_s):
                while True:
                    with contextlib.suppress(CdpError):  # e.g. mid-navigation
                        value = await self.evaluate(expression, limit_s=limit_s)
                        if value:
                            return value
                    await asyncio.sleep(every_s)
        except TimeoutError:
            state = ""
            if explain is not None:
                try:
                    state = f"\npage state: {json.dumps(await self.evaluate(explain, limit_s=5))}"
                except (CdpError, TimeoutError) as exc:
                    state = f"\npage state unavailable: {exc}"
            raise AssertionError(
                f"waited {limit_s:.0f} s for {what or expression}{state}\n"
                f"page log:\n{self.log.tail()}"
            ) from None

    async def click(self, testid: str) -> None:
        """Click the element with `data-testid` (it must exist and be enabled)."""
        selector = json.dumps(f'[data-testid="{testid}"]')
        ok = await self.evaluate(
            f"(() => {{ const e = document.querySelector({selector});"
            " if (!e || e.disabled) return false; e.click(); return true; })()"
        )
        if not ok:
            raise AssertionError(f"no enabled element data-testid={testid!r} to click")

    async def screenshot(self, path: Path, *, copy_to_out: bool = True) -> Path:
        """A PNG of the whole page at `path`; also copied to out/screenshots/ for people."""
        metrics = await self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = max(WINDOW[1], min(int(size["height"]), 6000))
        shot = await self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": WINDOW[0], "height": height, "scale": 1},
            },
        )
        _save_png(path, base64.b64decode(shot["data"]), copy_to_out=copy_to_out)
        return path


def _save_png(path: Path, data: bytes, *, copy_to_out: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if copy_to_out:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _read_port_file(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def chromium_args(
    user_data_dir: Path,
    *,
    fake_mic: Path | None = None,
    loop_mic: bool = False,
    grant_mic: bool = True,
    spki: Sequence[str] = (),
    host_rules: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line (after the executable) for one test browser."""
    args = [
        *BASE_FLAGS,
        # A person answering the microphone question: yes, or no.
        "--use-fake-ui-for-media-stream" if grant_mic else "--deny-permission-prompts",
        f"--user-data-dir={user_data_dir}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ]
    if fake_mic is not None:
        # Without %noloop the file repeats, so its speech would come back every few seconds.
        suffix = "" if loop_mic else "%noloop"
        args.append(f"--use-file-for-fake-audio-capture={fake_mic}{suffix}")
    if spki:
        args.append(f"--ignore-certificate-errors-spki-list={','.join(spki)}")
    if host_rules:
        args.append(f"--host-resolver-rules={', '.join(host_rules)}")
    args.extend(extra)
    args.append("about:blank")
    return args


async def _devtools_url(profile: Path, process: asyncio.subprocess.Process, log_path: Path) -> str:
    """Chromium writes its port and browser path to DevToolsActivePort once it listens."""
    port_file = profile / "DevToolsActivePort"
    try:
        async with asyncio.timeout(START_LIMIT_S):
            while True:
                if process.returncode is not None:
                    raise BrowserError(
                        f"chromium exited ({process.returncode}) before listening:\n"
                        + _tail(log_path)
                    )
                lines = _read_port_file(port_file)
                if len(lines) >= 2:
                    return f"ws://127.0.0.1:{int(lines[0])}{lines[1]}"
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise BrowserError(
            f"chromium did not open its DevTools port within {START_LIMIT_S:.0f} s:\n"
            + _tail(log_path)
        ) from None


async def _kill(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the browser's process group, SIGKILL after a grace period."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            pass
    # Renderer and zygote children may outlive the main process: the group goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.returncode is None:
        async with asyncio.timeout(5):
            await process.wait()


@contextlib.asynccontextmanager
async def open_chromium(
    tmp_dir: Path,
    *,
    fake_mic: Path | None = None,
    loop_mic: bool = False,
    grant_mic: bool = True,
    spki: Sequence[str] = (),
    host_rules: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> AsyncIterator[Browser]:
    """A fresh headless Chromium with one page; killed on exit, whatever happened.

    `fake_mic`: a WAV the fake microphone plays (once, unless `loop_mic`); `grant_mic`: False
    refuses the microphone as a person would (NotAllowedError in the page); `spki`: base64
    SHA-256 pins of certificates to trust (see duplex.orchestrator.tls.spki_sha256_base64);
    `host_rules`: e.g. "MAP demo.test 127.0.0.1", so a test uses a real-looking name and
    stays on loopback.
    """
    executable = require_chromium()
    profile = tmp_dir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    log_path = tmp_dir / "chromium.log"
    args = chromium_args(
        profile,
        fake_mic=fake_mic,
        loop_mic=loop_mic,
        grant_mic=grant_mic,
        spki=spki,
        host_rules=host_rules,
        extra=extra_args,
    )
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            executable,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,  # its own process group, killed as one
        )
    cdp: _Cdp | None = None
    try:
        url = await _devtools_url(profile, process, log_path)
        async with asyncio.timeout(CALL_LIMIT_S):
            ws = await connect(url, max_size=64 * 1024 * 1024, open_timeout=CALL_LIMIT_S)
        page_log = PageLog()
        cdp = _Cdp(ws, page_log)
        targets = await cdp.call("Target.getTargets")
        pages = [t for t in targets["targetInfos"] if t["type"] == "page"]
        if pages:
            target = pages[0]["targetId"]
        else:
            target = (await cdp.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
        attached = await cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        browser = Browser(cdp, attached["sessionId"], page_log)
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            await browser.call(domain)
        yield browser
    finally:
        if cdp is not None:
            await cdp.close()
        await _kill(process)


# -- serving an ASGI app for a page test ----------------------------------------------------


@dataclass(frozen=True)
class Served:
    """An app served by uvicorn on 127.0.0.1."""

    port: int
    scheme: str

    def url(self, host: str = "127.0.0.1", path: str = "/") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


@contextlib.asynccontextmanager
async def serve_app(
    app: Any, *, ssl_kwargs: dict[str, str] | None = None, limit_s: float = 10.0
) -> AsyncIterator[Served]:
    """Run `app` under a real uvicorn on 127.0.0.1, port 0 (TLS with `ssl_kwargs`, the
    output of duplex.orchestrator.tls.server_ssl_kwargs)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_config=None,
        access_log=False,
        **(ssl_kwargs or {}),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="test-uvicorn")
    try:
        async with asyncio.timeout(limit_s):
            while not server.started:
                if task.done():
                    await task
                    raise RuntimeError("uvicorn exited during startup")
                await asyncio.sleep(0.02)
        port = int(server.servers[0].sockets[0].getsockname()[1])
        yield Served(port, "https" if ssl_kwargs else "http")
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(limit_s):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
