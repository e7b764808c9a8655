"""The demo page's HTTP side on a real uvicorn, and the browser assets shipped in the wheel."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from duplex.orchestrator.pages import models_from_workers, page_routes
from duplex.orchestrator.tls import ensure_self_signed, server_ssl_kwargs
from duplex.registry.records import Capabilities, WorkerMetrics, WorkerRecord
from duplex.webassets import web_root
from starlette.applications import Starlette
from starlette.requests import Request

from tests.integration.browser import serve_app

REPO = Path(__file__).resolve().parents[2]
MODELS: list[dict[str, object]] = [
    {"id": "piper-en-joe-medium", "language": "en", "workers": ["tts-piper@0", "tts-piper@1"]},
    {"id": "kokoro-ja-jf_alpha", "language": "ja", "workers": ["tts-kokoro@0"]},
]


def fetch(url: str, *, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET `url`: (status, lower-cased headers, body), error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read()
    except urllib.error.HTTPError as exc:
        headers = {k.lower(): v for k, v in exc.headers.items()}
        return exc.code, headers, exc.read()


Reply = tuple[int, dict[str, str], bytes]


async def get(url: str, *, context: ssl.SSLContext | None = None) -> Reply:
    return await asyncio.to_thread(fetch, url, context=context)


def pages_app(models: list[dict[str, object]] | None = None, **kwargs: object) -> Starlette:
    chosen = MODELS if models is None else models
    return Starlette(routes=page_routes(web_root(), lambda: chosen, **kwargs))  # type: ignore[arg-type]


def test_web_root_is_the_checkouts_web_folder() -> None:
    assert web_root() == REPO / "web"


async def test_root_serves_the_demo_page_uncached() -> None:
    async with serve_app(pages_app()) as served:
        status, headers, body = await get(served.url())
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-cache"
    assert body == (REPO / "web" / "demo" / "index.html").read_bytes()


def page_references() -> set[str]:
    """Every URL path that index.html loads, and every module the scripts import."""
    demo = REPO / "web" / "demo"
    paths = set(re.findall(r'(?:src|href)="(/demo/[^"]+)"', (demo / "index.html").read_text()))
    for script in demo.glob("*.js"):
        paths |= {f"/demo/{m}" for m in re.findall(r'from "\./([^"]+)"', script.read_text())}
    return paths


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for page in (REPO / "web" / "demo").iterdir():
        text = page.read_text()
        assert not re.findall(r'(?:src|href)="(?:https?:)?//', text), page.name
        assert not re.findall(r'(?:import|from)\s*\(?\s*"(?:https?:)?//', text), page.name
        assert 'fetch("http' not in text, page.name


async def test_every_asset_the_page_names_is_served_uncached() -> None:
    references = page_references()
    assert {"/demo/app.js", "/demo/style.css", "/demo/connection.js"} <= references
    kinds = {".js": "javascript", ".css": "text/css"}
    async with serve_app(pages_app()) as served:
        for path in sorted(references):
            status, headers, body = await get(served.url(path=path))
            assert status == 200, path
            assert kinds[Path(path).suffix] in headers["content-type"], path
            assert headers["cache-control"] == "no-cache"
            assert body == (REPO / "web" / path.removeprefix("/")).read_bytes()
        status, _, _ = await get(served.url(path="/demo/nothing-here.js"))
        assert status == 404


async def test_api_models_lists_what_the_callable_returns() -> None:
    async with serve_app(pages_app()) as served:
        status, headers, body = await get(served.url(path="/api/models"))
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert json.loads(body) == {"models": MODELS}


async def test_api_models_is_read_on_every_request() -> None:
    live: list[dict[str, object]] = []
    async with serve_app(pages_app(live)) as served:
        first = json.loads((await get(served.url(path="/api/models")))[2])
        live.append(MODELS[0])
        second = json.loads((await get(served.url(path="/api/models")))[2])
    assert first == {"models": []}
    assert second == {"models": [MODELS[0]]}


async def test_api_models_refuses_a_request_the_guard_rejects() -> None:
    def authorize(request: Request) -> bool:
        return request.query_params.get("key") == "s3cret"

    async with serve_app(pages_app(authorize=authorize)) as served:
        refused = await get(served.url(path="/api/models?key=wrong"))
        allowed = await get(served.url(path="/api/models?key=s3cret"))
        page = await get(served.url())  # the page itself is public
    assert refused[0] == 401
    assert "API key" in json.loads(refused[2])["error"]
    assert allowed[0] == 200
    assert page[0] == 200


def test_page_routes_refuse_a_folder_without_the_demo(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        page_routes(tmp_path, list)


async def test_pages_are_served_over_https_with_the_self_signed_certificate(
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["localhost", "127.0.0.1"])
    trusting = ssl.create_default_context(cafile=str(cert))
    async with serve_app(pages_app(), ssl_kwargs=server_ssl_kwargs(cert, key)) as served:
        assert served.scheme == "https"
        status, _, body = await get(served.url("localhost"), context=trusting)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            await get(served.url("localhost"))  # not trusted by default: a browser warns
    assert status == 200
    assert b"Duplex voice demo" in body


def record(name: str, models: tuple[str, ...], languages: tuple[str, ...]) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr="grpc://127.0.0.1:9",
        adapter_type="piper",
        capabilities=Capabilities(languages=languages),
        resident_models=models[:1],
        available_models=models,
        metrics=WorkerMetrics(),
        last_heartbeat=0.0,
    )


def test_models_from_workers_groups_workers_by_model_and_skips_drained_ones() -> None:
    workers = {
        "tts-piper@1": record("tts-piper@1", ("piper-en-joe-medium",), ("en",)),
        "tts-piper@0": record("tts-piper@0", ("piper-en-joe-medium", "tone-fast"), ("en",)),
        "tts-kokoro@0": record("tts-kokoro@0", ("kokoro-ja-jf_alpha",), ("ja",)),
        "tts-old@0": record("tts-old@0", ("old-model",), ("en",)),
    }
    assert models_from_workers(workers, drained={"tts-old@0"}) == [
        {"id": "kokoro-ja-jf_alpha", "language": "ja", "workers": ["tts-kokoro@0"]},
        {"id": "piper-en-joe-medium", "language": "en", "workers": ["tts-piper@0", "tts-piper@1"]},
        {"id": "tone-fast", "language": "en", "workers": ["tts-piper@0"]},
    ]


def _copy_project(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, dest / name)
    for folder in ("services", "web"):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    return dest


def test_the_wheel_ships_the_browser_assets_and_web_root_finds_them(tmp_path: Path) -> None:
    # Built from a copy, so the checkout gets no build/ or egg-info from the test.
    source = _copy_project(tmp_path / "src")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = wheels.glob("duplex-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in sorted((REPO / "web").rglob("*")):
        if asset.is_file() and "__pycache__" not in asset.parts:
            assert f"duplex/_web/{asset.relative_to(REPO / 'web').as_posix()}" in names
    assert "duplex/webassets.py" in names

    # Installed (unpacked) away from any checkout, web_root() finds the packaged copy.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    found = subprocess.run(
        [sys.executable, "-c", "from duplex.webassets import web_root; print(web_root())"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert Path(found) == site / "duplex" / "_web"
    assert (Path(found) / "demo" / "index.html").read_bytes() == (
        REPO / "web" / "demo" / "index.html"
    ).read_bytes()
