"""The worker API across hosts: nobody without the token (or, with mutual TLS, without a
certificate from the fleet's CA) can call LoadModel or open a stream; health checks stay open;
an orchestrator with the credentials speaks through the worker as before."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest
from duplex.deploy.pki import ensure_ca, issue
from duplex.gen.tts.v1 import tts_pb2, tts_pb2_grpc
from duplex.workerclient import WorkerClient, WorkerError
from duplex.workerclient.credentials import (
    ENV_CA,
    ENV_CERT,
    ENV_KEY,
    ENV_TOKEN,
    WorkerSecurity,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.orchestrator_fixtures import (
    Client,
    orch_config,
    running_orchestrator,
    tone_frames,
    wait_for_workers,
)
from tests.integration.worker_fixtures import open_request, running_worker, worker_config

TOKEN = "fleet-token-for-tests"


async def health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return int(reply.status)


async def refused_code(channel: grpc.aio.Channel) -> set[grpc.StatusCode]:
    """The status of LoadModel and of a Synthesize stream on `channel`."""
    stub = tts_pb2_grpc.TTSWorkerStub(channel)
    codes = set()
    with pytest.raises(grpc.aio.AioRpcError) as load:
        await stub.LoadModel(tts_pb2.LoadModelRequest(model_id="tone-fast"), timeout=5)
    codes.add(load.value.code())
    call = stub.Synthesize(timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as stream:
        await call.write(open_request())
        await call.read()
    codes.add(stream.value.code())
    return codes


async def test_without_the_token_nothing_but_health_answers(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    async with running_worker(worker_config(redis_url, name="locked")) as worker:
        async with grpc.aio.insecure_channel(worker.target) as plain:
            assert await refused_code(plain) == {grpc.StatusCode.UNAUTHENTICATED}
            assert await health(plain) == health_pb2.HealthCheckResponse.SERVING
        wrong = WorkerClient(worker.target, WorkerSecurity(token="not-it"))
        right = WorkerClient(worker.target, WorkerSecurity(token=TOKEN))
        try:
            with pytest.raises(WorkerError, match="token"):
                await wrong.load_model("tone-fast")
            assert (await right.load_model("tone-fast")).model.model_id == "tone-fast"
            stream = await right.open_stream("s1", "tone-fast", 48000, "en", 0)
            await stream.send_text("Hi.", True)
            await stream.close()
        finally:
            await wrong.close()
            await right.close()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = ensure_ca(tmp_path / "fleet")
    worker = issue(ca, tmp_path / "fleet", "worker", ["127.0.0.1"])
    orchestrator = issue(ca, tmp_path / "fleet", "orchestrator", ["127.0.0.1"])
    other = ensure_ca(tmp_path / "other")
    intruder = issue(other, tmp_path / "other", "intruder", ["127.0.0.1"])
    return {
        "ca": ca.cert,
        "worker.pem": worker.cert,
        "worker.key": worker.key,
        "orchestrator.pem": orchestrator.cert,
        "orchestrator.key": orchestrator.key,
        "intruder.pem": intruder.cert,
        "intruder.key": intruder.key,
    }


async def test_with_mutual_tls_only_a_certificate_from_the_fleet_ca_gets_in(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]
) -> None:
    monkeypatch.setenv(ENV_CA, str(pki["ca"]))
    monkeypatch.setenv(ENV_CERT, str(pki["worker.pem"]))
    monkeypatch.setenv(ENV_KEY, str(pki["worker.key"]))
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    async with running_worker(worker_config(redis_url, name="mtls-w1")) as worker:
        ca = pki["ca"].read_bytes()
        attempts = {
            "plaintext": grpc.aio.insecure_channel(worker.target),
            "TLS, no client certificate": grpc.aio.secure_channel(
                worker.target, grpc.ssl_channel_credentials(ca)
            ),
            "a certificate from another CA": grpc.aio.secure_channel(
                worker.target,
                grpc.ssl_channel_credentials(
                    ca, pki["intruder.key"].read_bytes(), pki["intruder.pem"].read_bytes()
                ),
            ),
        }
        for what, channel in attempts.items():
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await tts_pb2_grpc.TTSWorkerStub(channel).ListModels(
                        tts_pb2.ListModelsRequest(), timeout=3
                    )
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, what

        # The orchestrator of this fleet (its own certificate, the same CA and token).
        monkeypatch.setenv(ENV_CERT, str(pki["orchestrator.pem"]))
        monkeypatch.setenv(ENV_KEY, str(pki["orchestrator.key"]))
        async with running_orchestrator(orch_config(redis_url)) as orch:
            await wait_for_workers(orch, {"mtls-w1"})
            async with Client(orch) as client:
                started = await client.start(model_id="tone-fast")
                assert started["worker"] == "mtls-w1"
                said = await client.say("Over mutual TLS.")
            assert len(said.frames) == tone_frames("Over mutual TLS.")
