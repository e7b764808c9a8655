"""The appliance in a real Docker engine: `make up` of the CPU stack, used through its ports.

`make test-compose` (and so `make test`) runs this module. It installs Debian's docker.io and
docker-compose when missing, starts dockerd when none answers (with no bridge and no iptables
rules; stopped again at the end), makes the base image with debootstrap and a Redis image on
it (Debian's redis-server: no image can be pulled here), then runs the product's own command,
`make up GPUS=0 CPU_WORKERS=2 MONITORING=0 NETWORK=host BASE=duplex-base:bookworm ...`: the
generator writes the stack, the wheels are built here and the images from them. Every
container is on the host's network with 127.0.0.1 addresses, so no test traffic leaves
loopback. Through the orchestrator's port: a sentence that Whisper understands, six sessions
split 3/3 over the two worker containers, the speaking worker's container killed
mid-utterance and the rest of the text spoken by the other; the console's worker list; and
`make down` leaving no container, network or volume.

A machine where no engine can run (not root, no kernel support) skips, saying why. Images,
the base's root filesystem and the wheels are cached (the engine's data root, .run/docker).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from duplex.devtools import docker
from duplex.devtools.probes import port_is_free

from tests.integration.console_client import ConsoleClient
from tests.integration.orchestrator_fixtures import Client, free_port
from tests.integration.speech_check import load_whisper, word_error_rate

RUN_ENV = "DUPLEX_COMPOSE_RUN"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        os.environ.get(RUN_ENV) != "1",
        reason=f"the real Docker run is `make test-compose` (it sets {RUN_ENV}=1)",
    ),
]

RATE = 16000  # Whisper's rate: the session asks the orchestrator for it directly
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
CLAUSES = (
    "The first part of this message is spoken by one worker, ",
    "the second part may be spoken by another one, ",
    "the third part tells us that nothing was lost, ",
    "and the last part ends the whole message here.",
)
STACK_DEADLINE_S = 180
IMAGE_TAG = "compose-test"


@dataclass(frozen=True)
class Ports:
    """Free loopback ports for the stack (two workers: two gRPC and two /metrics ports)."""

    redis: int
    orchestrator: int
    console: int
    grpc_base: int
    metrics_base: int

    @classmethod
    def free(cls) -> Ports:
        taken: set[int] = set()

        def run_of(count: int) -> int:
            for _ in range(200):
                first = free_port()
                wanted = range(first, first + count)
                if taken.isdisjoint(wanted) and all(port_is_free("127.0.0.1", p) for p in wanted):
                    taken.update(wanted)
                    return first
            raise AssertionError(f"no {count} consecutive free ports on 127.0.0.1")

        return cls(run_of(1), run_of(1), run_of(1), run_of(2), run_of(2))

    def make_vars(self) -> list[str]:
        return [
            f"REDIS_PORT={self.redis}",
            f"ORCH_PORT={self.orchestrator}",
            f"CONSOLE_PORT={self.console}",
            f"GRPC_BASE_PORT={self.grpc_base}",
            f"METRICS_BASE_PORT={self.metrics_base}",
        ]


@dataclass(frozen=True)
class Stack:
    """A compose project that `make up` generated and started, on the host network."""

    project: str
    folder: Path  # its STACK_DIR: .run/compose-<project>
    ports: Ports

    @property
    def make_vars(self) -> list[str]:
        relative = self.folder.relative_to(docker.ROOT)
        return [
            "GPUS=0",
            "CPU_WORKERS=2",
            "MONITORING=0",
            "NETWORK=host",
            f"IMAGE_TAG={IMAGE_TAG}",
            f"BASE={docker.BASE_IMAGE}",
            f"REDIS_IMAGE={docker.REDIS_IMAGE}",
            f"STACK_DIR={relative}",
            f"ENV_FILE={relative}/.env",
            f"COMPOSE_PROJECT={self.project}",
            *self.ports.make_vars(),
        ]

    def make(self, target: str, timeout_s: float = 900) -> str:
        argv = ["make", "--no-print-directory", "-C", str(docker.ROOT), target, *self.make_vars]
        log = docker.fresh_log(f"make-{target}.log")
        return docker.run(argv, log=log, timeout_s=timeout_s, env=docker.docker_env())

    @property
    def orchestrator(self) -> str:
        return f"ws://127.0.0.1:{self.ports.orchestrator}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.console}"

    @property
    def workers(self) -> dict[str, str]:
        """Worker name -> its compose service (the generator's names)."""
        return {f"tts-piper@cpu{i}": f"tts-piper-cpu{i}" for i in range(2)}

    def compose(self, *args: str, timeout_s: float = 120) -> str:
        argv = [
            *docker.compose_command(),
            "-p", self.project,
            "-f", str(self.folder / "docker-compose.yml"),
            "--env-file", str(self.folder / ".env"),
        ]  # fmt: skip
        return docker.run([*argv, *args], timeout_s=timeout_s, env=docker.docker_env())

    def container_of(self, worker: str) -> str:
        return self.compose("ps", "-q", self.workers[worker]).strip()

    def leftovers(self) -> dict[str, list[str]]:
        """The project's containers, networks and volumes that the engine still has."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, argv in (
            ("containers", ["docker", "ps", "-a", "-q", "--filter", label]),
            ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
            ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
        ):
            found[kind] = docker.run(argv, timeout_s=60).split()
        return found


def _http_json(url: str, timeout_s: float = 3) -> tuple[int, dict[str, object]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def _wait_ready(stack: Stack, workers: int) -> None:
    """Until the orchestrator's /ready counts `workers` live workers (the stack is up)."""
    url = f"http://127.0.0.1:{stack.ports.orchestrator}/ready"
    deadline = time.monotonic() + STACK_DEADLINE_S
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        status, body = _http_json(url)
        if status == 200 and body.get("workers") == workers:
            return
        time.sleep(1)
    ps = stack.compose("ps")
    logs = stack.compose("logs", "--tail", "20")
    raise AssertionError(f"stack not ready in {STACK_DEADLINE_S} s: {body}\n{ps}\n{logs}")


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.Engine]:
    """A Docker engine: the running one, or dockerd started for this module and stopped after."""
    try:
        started = docker.ensure_engine()
    except docker.DockerUnavailable as exc:
        docker.say(f"!! SKIPPING the real compose run: {exc}")
        pytest.skip(f"no Docker engine can run here: {exc}")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def stack(engine: docker.Engine) -> Iterator[Stack]:
    """make up GPUS=0 CPU_WORKERS=2 MONITORING=0 NETWORK=host on the local base, on free
    loopback ports; make down (and the folder removed) at the end, whatever happened."""
    docker.ensure_base_image()
    docker.ensure_redis_image()
    project = f"duplextest{secrets.token_hex(3)}"
    # Two levels below the repository, like compose/generated/: the generated build context
    # (../..) is then the repository.
    started = Stack(project, docker.ROOT / ".run" / f"compose-{project}", Ports.free())
    try:
        with docker.step(
            f"make up GPUS=0 CPU_WORKERS=2 MONITORING=0 NETWORK=host ({project}: generate, "
            f"wheels, build the images, start; log: {docker.CACHE / 'logs' / 'make-up.log'})"
        ):
            started.make("up")
        with docker.step("waiting for the orchestrator's /ready to count both workers"):
            _wait_ready(started, workers=2)
        yield started
    finally:
        started.make("down", timeout_s=180)
        shutil.rmtree(started.folder, ignore_errors=True)


def _pcm(frames: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(frames), dtype=np.int16).astype(np.float32) / 32768


def _recall(reference: str, heard: str) -> float:
    """The share of the reference's words that the transcript has, in order (an LCS): a
    repeated clause costs nothing, a lost one does."""
    ref = word_list(reference)
    hyp = word_list(heard)
    previous = [0] * (len(hyp) + 1)
    for r in ref:
        current = [0]
        for j, h in enumerate(hyp, 1):
            current.append(previous[j - 1] + 1 if r == h else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1] / len(ref)


def word_list(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c == " " else " " for c in text.lower()).split()


async def test_the_console_lists_both_worker_containers(stack: Stack) -> None:
    """The console (its own container) reads the workers from Redis: both are on its page."""
    page = await ConsoleClient(stack.console_url).get("/fragments/workers")
    assert page.status == 200
    for name in stack.workers:
        assert name in page.text


async def test_a_sentence_spoken_through_the_orchestrator_is_understood(stack: Stack) -> None:
    """Piper in a worker container, through the orchestrator container: Whisper hears it."""
    async with Client(stack.orchestrator) as client:
        started = await client.start(sample_rate=RATE, language="en")
        assert started["type"] == "SessionStarted", started
        assert started["worker"] in stack.workers
        utterance = await client.say(SENTENCE, limit_s=60)
    model = await asyncio.to_thread(load_whisper)
    segments, _ = await asyncio.to_thread(
        model.transcribe, _pcm(utterance.frames), language="en", beam_size=1
    )
    heard = " ".join(segment.text for segment in segments)
    assert word_error_rate(SENTENCE, heard) <= 0.10, heard


async def test_six_sessions_split_three_and_three_over_the_workers(stack: Stack) -> None:
    """Least-loaded routing spreads open sessions evenly over the two containers."""
    clients = [Client(stack.orchestrator) for _ in range(6)]
    try:
        for client in clients:
            await client.__aenter__()
        routed = [(await c.start(sample_rate=RATE))["worker"] for c in clients]
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
    assert Counter(routed) == Counter({name: 3 for name in stack.workers})


async def test_a_killed_worker_container_fails_over_and_no_text_is_lost(stack: Stack) -> None:
    """docker kill (SIGKILL) of the container speaking: WorkerFailover, then the other
    worker speaks the rest; Whisper hears every word of every clause."""
    text = "".join(CLAUSES)
    async with Client(stack.orchestrator) as client:
        started = await client.start(sample_rate=RATE, language="en")
        victim = started["worker"]
        (survivor,) = set(stack.workers) - {victim}
        await client.text(text, is_final=True)
        await client.wait_for(lambda got: len(got.utterance(0).frames) >= 50, limit_s=60)
        docker.run(["docker", "kill", stack.container_of(victim)], timeout_s=60)
        await client.wait_for(lambda got: got.audio_ends() == [0], limit_s=90)
        failovers = client.got.of_type("WorkerFailover")
        frames = client.got.utterance(0).frames
    assert failovers == [{"type": "WorkerFailover", "from": victim, "to": survivor}]
    model = await asyncio.to_thread(load_whisper)
    segments, _ = await asyncio.to_thread(
        model.transcribe, _pcm(frames), language="en", beam_size=1
    )
    heard = " ".join(segment.text for segment in segments)
    assert _recall(text, heard) >= 0.9, heard


def test_make_down_leaves_no_container_network_or_volume(stack: Stack) -> None:
    """make down: nothing of the project is left in the engine."""
    before = stack.leftovers()
    assert len(before["containers"]) == 5 and before["volumes"], before
    stack.make("down", timeout_s=180)
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
