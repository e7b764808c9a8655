"""A small HTTP/1.1 client for console tests: keeps the session cookie like a browser, posts
forms, sets headers (Origin, X-CSRF-Token, HX-Request). Real sockets to a real uvicorn;
the project has no httpx, and the console needs nothing more than this.

    async with ConsoleServer(config) as console:
        browser = ConsoleClient(console.url)
        await browser.sign_in("the-token")
        page = await browser.get("/workers")
        csrf = page.csrf()  # the session's token, as the page carries it
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

DEADLINE_S = 10.0
_CSRF_IN_PAGE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def csrf(self) -> str:
        """The CSRF token a signed-in page carries (its sign-out form's hidden field)."""
        found = _CSRF_IN_PAGE.search(self.text)
        if found is None:
            raise AssertionError("the page carries no CSRF token (not signed in?)")
        return found.group(1)


@dataclass
class ConsoleClient:
    """One browser: a cookie jar and the console's base URL ("http://127.0.0.1:port")."""

    base_url: str
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return self.base_url

    async def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        parts = urlsplit(self.base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        body = urlencode(form).encode() if form is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        if form is not None:
            lines.append("Content-Type: application/x-www-form-urlencoded")
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        async with asyncio.timeout(DEADLINE_S):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            raw = await reader.read()
            writer.close()
            await writer.wait_closed()
        response = _parse(raw)
        for value in response.all("set-cookie"):
            cookie = SimpleCookie()
            cookie.load(value)
            for name, morsel in cookie.items():
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return response

    async def get(self, path: str, *, headers: dict[str, str] | None = None) -> HttpResponse:
        return await self.request("GET", path, headers=headers)

    async def post(
        self,
        path: str,
        form: dict[str, str] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        form = form if form is not None else {}
        return await self.request("POST", path, form=form, headers=headers)

    async def sign_in(self, token: str) -> HttpResponse:
        """POST /signin as the sign-in form does (same origin); 303 when the token is right."""
        return await self.post("/signin", {"token": token}, headers={"Origin": self.origin})


def _parse(raw: bytes) -> HttpResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(k, v) for k, _, v in (line.partition(": ") for line in lines[1:])]
    response = HttpResponse(int(lines[0].split()[1]), headers, body)
    if (response.header("transfer-encoding") or "").lower() == "chunked":
        response.body = _unchunk(body)
    return response


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
