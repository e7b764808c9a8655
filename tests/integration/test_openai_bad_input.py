"""`/v1/audio/speech` refusals: OpenAI's error body and the documented status, and no session
or worker stream left behind."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

import openai
import pytest
from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import AuthConfig

from tests.integration.openai_fixtures import api_config, fleet, sdk, stream_speech

LONG_TONE = "This sentence is long enough to keep a slow tone voice busy, for seconds. " * 3


async def nothing_left(orch: OrchestratorServer) -> None:
    """Until no speech session and no routed worker stream remains (a deadline applies)."""
    runtime = orch.app.state.runtime
    async with asyncio.timeout(5):
        while True:
            if not runtime.speech.hub.active and not any(runtime.router.inflight().values()):
                return
            await asyncio.sleep(0.02)


async def refusal(client: openai.AsyncOpenAI, **params: Any) -> openai.APIStatusError:
    params = {"model": "tts-1", "voice": "alloy", "input": "Hello.", **params}
    with pytest.raises(openai.APIStatusError) as info:
        async with client.audio.speech.with_streaming_response.create(**params) as resp:
            await resp.read()
    return info.value


def error_of(err: openai.APIStatusError) -> dict[str, Any]:
    body = err.body
    assert isinstance(body, dict) and set(body) >= {"message", "type", "param", "code"}, body
    return body


CASES: list[tuple[dict[str, Any], int, str]] = [
    ({"input": ""}, 400, "input"),
    ({"input": "   "}, 400, "input"),
    ({"input": "x" * 4097}, 400, "input"),
    ({"voice": "nobody"}, 404, "voice"),
    ({"model": "gpt-99"}, 404, "model"),
    ({"speed": 0}, 400, "speed"),
    ({"speed": 10}, 400, "speed"),
    ({"speed": 1.5}, 400, "speed"),
    ({"response_format": "ogg"}, 400, "response_format"),
    ({"stream_format": "chunks"}, 400, "stream_format"),
]


async def test_bad_requests_get_openai_errors_with_their_status(redis_url: str) -> None:
    """Each bad field: its status, OpenAI's error object naming the field, nothing left."""
    async with fleet(redis_url, tone_rtf=0.0) as orch:
        client = sdk(orch)
        for params, status, param in CASES:
            err = await refusal(client, **params)
            assert err.status_code == status, (params, err.body)
            assert error_of(err)["param"] == param, (params, err.body)
        await nothing_left(orch)
        metrics = orch.app.state.runtime.metrics.render().decode()
    assert 'duplex_orch_api_requests_total{api="openai",status="400"} 8.0' in metrics
    assert 'duplex_orch_api_requests_total{api="openai",status="404"} 2.0' in metrics


async def test_a_body_that_is_not_json_is_refused(redis_url: str) -> None:
    async with fleet(redis_url, tone_rtf=0.0) as orch:
        request = urllib.request.Request(
            f"{orch.http_url}/v1/audio/speech", data=b"{not json", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
    assert info.value.code == 400
    assert json.loads(info.value.read())["error"]["code"] == "invalid_json"


async def test_a_missing_or_wrong_key_is_refused_with_401(redis_url: str) -> None:
    """With API_KEYS set (and required on loopback): no key or a wrong one is 401 in
    OpenAI's shape; the right key is served."""
    config = api_config(redis_url)
    config = replace(config, auth=AuthConfig(api_keys=("right-key",), require_on_loopback=True))
    async with fleet(redis_url, tone_rtf=0.0, config=config) as orch:
        wrong = await refusal(sdk(orch, api_key="wrong-key"))
        request = urllib.request.Request(
            f"{orch.http_url}/v1/audio/speech",
            data=json.dumps({"model": "tts-1", "voice": "alloy", "input": "Hi."}).encode(),
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as missing:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
        served = await stream_speech(
            sdk(orch, api_key="right-key"), "Hello.", response_format="pcm"
        )
    assert isinstance(wrong, openai.AuthenticationError)
    assert error_of(wrong)["code"] == "invalid_api_key"
    assert missing.value.code == 401
    assert "API key" in json.loads(missing.value.read())["error"]["message"]
    assert served.body


async def test_with_no_worker_the_request_gets_503_with_retry_after(redis_url: str) -> None:
    async with fleet(redis_url) as orch:
        err = await refusal(sdk(orch))
        await nothing_left(orch)
    assert err.status_code == 503
    assert err.response.headers["retry-after"] == "1"
    assert error_of(err)["code"] == "no_worker_available"


async def test_beyond_max_connections_the_request_gets_429_with_retry_after(
    redis_url: str,
) -> None:
    """One request streaming holds the only place (and is listed as a live session of
    transport "openai"); the next is 429 and may retry."""
    config = api_config(redis_url)
    ws = replace(config.transport.websocket, max_connections=1)
    config = replace(config, transport=replace(config.transport, websocket=ws))
    async with fleet(redis_url, tone_rtf=1.0, config=config) as orch:
        client = sdk(orch)
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=LONG_TONE, response_format="pcm"
        ) as holding:
            await anext(holding.iter_bytes())
            err = await refusal(client)
            # What the console's Sessions page lists (the orchestrator publishes these).
            live = orch.app.state.runtime.speech.summaries()
            assert [(s.transport, s.worker) for s in live] == [("openai", "test-tone")]
        await nothing_left(orch)
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "1"
    assert error_of(err)["type"] == "rate_limit_error"


async def test_a_client_that_disconnects_mid_stream_leaves_nothing_open(redis_url: str) -> None:
    """The client reads one chunk of a long answer and closes: the session ends, the worker
    stream is closed and its routing count released, and the request counts as 499."""
    async with fleet(redis_url, tone_rtf=1.0) as orch:
        client = sdk(orch)
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=LONG_TONE, response_format="mp3"
        ) as resp:
            await anext(resp.iter_bytes())
        await nothing_left(orch)
        metrics = orch.app.state.runtime.metrics.render().decode()
    assert 'duplex_orch_api_requests_total{api="openai",status="499"} 1.0' in metrics
