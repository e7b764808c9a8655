"""The demo page in a real headless Chromium, served by a real uvicorn with only the page
routes: it starts, lists the registry's models, and says plainly when the microphone cannot
work (plain http under a real-looking name, or a refused permission), while over HTTPS with a
trusted certificate it is a secure context with a microphone API."""

from __future__ import annotations

import json
from pathlib import Path

from duplex.orchestrator.pages import page_routes
from duplex.orchestrator.tls import ensure_self_signed, server_ssl_kwargs, spki_sha256_base64
from duplex.webassets import web_root
from starlette.applications import Starlette

from tests.integration.browser import open_chromium, serve_app

MODELS: list[dict[str, object]] = [
    {"id": "piper-en-joe-medium", "language": "en", "workers": ["tts-piper@0", "tts-piper@1"]},
    {"id": "kokoro-ja-jf_alpha", "language": "ja", "workers": ["tts-kokoro@0"]},
]
DEMO_HOST = "demo.test"  # mapped to 127.0.0.1 inside the browser; nothing leaves loopback
HOST_RULES = [f"MAP {DEMO_HOST} 127.0.0.1"]
READY = "window.duplexDemo && window.duplexDemo.ready"
VISIBLE = '(id) => { const e = document.querySelector(`[data-testid="${id}"]`); return !!e && !e.hidden && e.offsetHeight > 0; }'  # noqa: E501


def pages_app() -> Starlette:
    return Starlette(routes=page_routes(web_root(), lambda: MODELS))


async def test_page_starts_and_lists_the_models_from_the_registry(tmp_path: Path) -> None:
    async with serve_app(pages_app()) as served, open_chromium(tmp_path) as browser:
        await browser.navigate(served.url(path="/?processing=0"))
        await browser.wait_for(READY, what="the page to start")
        state = await browser.evaluate(
            "(() => { const d = window.duplexDemo; return {secure: d.secure, state: d.state,"
            " processing: d.processing, models: d.models, modelsLoaded: d.modelsLoaded,"
            " events: d.events.map(e => e.type)}; })()"
        )
        options = await browser.evaluate(
            "[...document.querySelectorAll('[data-testid=model-select] option')]"
            ".map(o => ({value: o.value, text: o.textContent, workers: o.dataset.workers}))"
        )
        banners = await browser.evaluate(
            f"['insecure-banner', 'mic-denied-banner', 'error-banner'].map({VISIBLE})"
        )
        hint = await browser.evaluate(
            "document.querySelector('[data-testid=model-hint]').textContent"
        )
        await browser.screenshot(tmp_path / "demo-page-loopback.png")
    assert state["secure"] is True  # 127.0.0.1 counts as a secure origin
    assert state["state"] == "idle"
    assert state["processing"] is False  # ?processing=0
    assert state["modelsLoaded"] is True
    assert state["models"] == MODELS
    assert "page loaded" in state["events"]
    assert [o["value"] for o in options] == ["", "piper-en-joe-medium", "kokoro-ja-jf_alpha"]
    assert options[1]["text"] == "piper-en-joe-medium (en)"
    assert options[1]["workers"] == "tts-piper@0, tts-piper@1"
    assert options[2]["text"] == "kokoro-ja-jf_alpha (ja)"
    assert banners == [False, False, False]
    assert hint == "2 models live in the registry; the router picks one that speaks English."
    assert not [line for line in browser.log.lines if line.startswith("exception")]


async def test_plain_http_under_a_host_name_shows_what_to_do_for_the_microphone(
    tmp_path: Path,
) -> None:
    async with (
        serve_app(pages_app()) as served,
        open_chromium(tmp_path, host_rules=HOST_RULES) as browser,
    ):
        await browser.navigate(served.url(DEMO_HOST))
        await browser.wait_for(READY, what="the page to start")
        seen = await browser.evaluate(
            "(() => ({secure: window.isSecureContext, mediaDevices: !!navigator.mediaDevices,"
            " mic: window.duplexDemo.mic,"
            f" visible: ({VISIBLE})('insecure-banner'),"
            " text: document.querySelector('[data-testid=insecure-banner]').innerText,"
            " link: document.querySelector('[data-field=https-url]').href,"
            " models: window.duplexDemo.models.length}))()"
        )
        await browser.screenshot(tmp_path / "demo-page-insecure.png")
    assert seen["secure"] is False
    assert seen["mediaDevices"] is False
    assert seen["mic"] == "insecure"
    assert seen["visible"] is True
    assert f"https://{DEMO_HOST}:8443/" in seen["text"]
    assert "make demo TLS=1" in seen["text"]
    assert "http://localhost:8080/" in seen["text"]
    assert seen["link"] == f"https://{DEMO_HOST}:8443/"
    assert seen["models"] == len(MODELS)  # the page still works, without a microphone


async def test_https_with_a_trusted_certificate_is_a_secure_context(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    ensure_self_signed(cert, key, ["localhost", "127.0.0.1", DEMO_HOST])
    async with (
        serve_app(pages_app(), ssl_kwargs=server_ssl_kwargs(cert, key)) as served,
        open_chromium(tmp_path, host_rules=HOST_RULES, spki=[spki_sha256_base64(cert)]) as browser,
    ):
        url = served.url(DEMO_HOST, "/?processing=0")
        assert url.startswith("https://")
        await browser.navigate(url)
        await browser.wait_for(READY, what="the page to start")
        seen = await browser.evaluate(
            "(async () => ({secure: window.isSecureContext, protocol: location.protocol,"
            " getUserMedia: typeof navigator.mediaDevices?.getUserMedia,"
            " inputs: (await navigator.mediaDevices.enumerateDevices())"
            "   .filter(d => d.kind === 'audioinput').length,"
            f" banners: ['insecure-banner', 'mic-denied-banner', 'error-banner'].map({VISIBLE}),"
            " models: window.duplexDemo.models.length}))()"
        )
        await browser.screenshot(tmp_path / "demo-page-https.png")
    assert seen["protocol"] == "https:"
    assert seen["secure"] is True
    assert seen["getUserMedia"] == "function"
    assert seen["inputs"] >= 1  # the fake microphone
    assert seen["banners"] == [False, False, False]
    assert seen["models"] == len(MODELS)


async def test_a_refused_microphone_gets_its_own_message(tmp_path: Path) -> None:
    async with (
        serve_app(pages_app()) as served,
        open_chromium(tmp_path, grant_mic=False) as browser,
    ):
        await browser.navigate(served.url(path="/?processing=0"))
        await browser.wait_for(READY, what="the page to start")
        await browser.click("connect")
        # This server has no /offer: the connection fails after the microphone question.
        await browser.wait_for("window.duplexDemo.state === 'failed'", what="the connect to end")
        seen = await browser.evaluate(
            "(() => ({mic: window.duplexDemo.mic, micError: window.duplexDemo.micError,"
            f" denied: ({VISIBLE})('mic-denied-banner'),"
            f" insecure: ({VISIBLE})('insecure-banner'),"
            " deniedText: document.querySelector('[data-testid=mic-denied-banner]').innerText,"
            " error: window.duplexDemo.error}))()"
        )
        await browser.screenshot(tmp_path / "demo-page-mic-denied.png")
    assert seen["mic"] == "denied", json.dumps(seen)
    assert seen["micError"].startswith("NotAllowedError")
    assert seen["denied"] is True
    assert seen["insecure"] is False
    assert "refused the microphone" in seen["deniedText"]
    assert "(404)" in seen["error"]  # the refused offer, named with its status


async def test_the_api_key_in_the_page_url_reaches_the_api(tmp_path: Path) -> None:
    app = Starlette(
        routes=page_routes(
            web_root(), lambda: MODELS, authorize=lambda r: r.query_params.get("key") == "s3cret"
        )
    )
    hint = "document.querySelector('[data-testid=model-hint]').textContent"
    async with serve_app(app) as served, open_chromium(tmp_path) as browser:
        await browser.navigate(served.url(path="/"))
        await browser.wait_for(READY, what="the page to start")
        refused = await browser.evaluate(hint)
        await browser.navigate(served.url(path="/?key=s3cret"))
        await browser.wait_for(READY, what="the page to start again")
        allowed = await browser.evaluate("window.duplexDemo.models.length")
    assert refused.startswith("Could not load the model list (401")
    assert '"Automatic" still works' in refused
    assert allowed == len(MODELS)
