"""Failover with real processes: a worker killed (kill -9) or frozen (SIGSTOP) mid-utterance.

The victim is a real `python -m duplex.worker` subprocess; the survivor an in-process worker
that registers after the session started (sessions stick to their worker). The tone voice
gives 60 ms of audio per character of each clause, so the audio a client receives tells
how much text was spoken: nothing may be missing, and at most the one clause that was cut
may be heard twice.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from duplex.text import ClauseSegmenter

from tests.integration.orchestrator_fixtures import (
    Client,
    free_port,
    orch_config,
    running_orchestrator,
    tone_frames,
    wait_for_workers,
)
from tests.integration.worker_fixtures import (
    running_worker,
    start_worker_process,
    stop_process,
    worker_config,
    write_worker_yaml,
)

CLAUSES = [
    "This is clause one, ",
    "this is clause two, ",
    "this is clause three, ",
    "and this is the end.",
]
TEXT = "".join(CLAUSES)
LONGEST_CLAUSE_FRAMES = max(tone_frames(c) for c in CLAUSES)


@pytest.fixture
def victim(redis_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A tone worker in its own process, on a fixed free port."""
    config = worker_config(redis_url, name="victim", worker_ttl_ms=1000)
    config = replace(config, worker=replace(config.worker, grpc_port=free_port()))
    proc = start_worker_process(write_worker_yaml(tmp_path / "victim.yaml", config))
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
    stop_process(proc, sig=signal.SIGKILL)


def clause_frames(text: str) -> list[int]:
    seg = ClauseSegmenter()
    return [tone_frames(c.text) for c in seg.push(text) + seg.finish() if not c.is_blank]


async def test_a_worker_killed_mid_utterance_fails_over_and_the_rest_is_spoken(
    redis_url: str, victim: subprocess.Popen[str]
) -> None:
    """kill -9: WorkerFailover {from, to}; the audio is as long as a run without failover."""
    async with running_orchestrator(orch_config(redis_url, frame_timeout_s=10.0)) as orch:
        await wait_for_workers(orch, {"victim"}, limit_s=30)
        async with running_worker(worker_config(redis_url, name="survivor")):
            async with Client(orch) as client:
                started = await client.start(model_id="tone-fast")
                assert started["worker"] == "victim"
                await wait_for_workers(orch, {"victim", "survivor"})
                await client.text(TEXT, is_final=True)
                await client.wait_for(lambda got: len(got.utterance(0).frames) >= 60)
                victim.send_signal(signal.SIGKILL)
                await client.wait_for(lambda got: got.audio_ends() == [0])
                failovers = client.got.of_type("WorkerFailover")
                assert failovers == [{"type": "WorkerFailover", "from": "victim", "to": "survivor"}]
                failed_over = len(client.got.utterance(0).frames)
            # The same text without a failover, for comparison.
            async with Client(orch) as client:
                assert (await client.start(model_id="tone-fast"))["worker"] == "survivor"
                reference = len((await client.say(TEXT)).frames)
    assert reference == tone_frames(TEXT)
    assert reference <= failed_over <= reference + LONGEST_CLAUSE_FRAMES


async def test_a_frozen_worker_is_replaced_after_the_frame_timeout(
    redis_url: str, victim: subprocess.Popen[str]
) -> None:
    """SIGSTOP keeps the connection open but sends nothing: frame_timeout_s fails it over."""
    async with running_orchestrator(orch_config(redis_url, frame_timeout_s=1.0)) as orch:
        await wait_for_workers(orch, {"victim"}, limit_s=30)
        async with (
            running_worker(worker_config(redis_url, name="survivor")),
            Client(orch) as client,
        ):
            await client.start(model_id="tone-fast")
            await wait_for_workers(orch, {"victim", "survivor"})
            await client.text(TEXT, is_final=True)
            await client.wait_for(lambda got: len(got.utterance(0).frames) >= 30)
            victim.send_signal(signal.SIGSTOP)
            await client.wait_for(lambda got: got.audio_ends() == [0], limit_s=15)
            assert client.got.of_type("WorkerFailover")[0]["to"] == "survivor"
            frames = len(client.got.utterance(0).frames)
    assert tone_frames(TEXT) <= frames <= tone_frames(TEXT) + LONGEST_CLAUSE_FRAMES


async def test_with_no_worker_left_the_unspoken_text_is_reported(
    redis_url: str, victim: subprocess.Popen[str]
) -> None:
    """The only worker dies: Error WORKER_FAILED counts exactly the characters not voiced."""
    async with running_orchestrator(orch_config(redis_url, frame_timeout_s=10.0)) as orch:
        await wait_for_workers(orch, {"victim"}, limit_s=30)
        async with Client(orch) as client:
            await client.start(model_id="tone-fast")
            await client.text(TEXT, is_final=True)
            await client.wait_for(lambda got: len(got.utterance(0).frames) >= 80)
            victim.send_signal(signal.SIGKILL)
            await client.wait_for(lambda got: bool(got.of_type("SessionEnded")))
            heard = len(client.got.utterance(0).frames)
    errors = client.got.of_type("Error")
    assert [e["code"] for e in errors] == ["WORKER_FAILED"]
    assert client.got.of_type("SessionEnded") == [
        {"type": "SessionEnded", "reason": "worker_failed"}
    ]
    assert client.got.audio_ends() == []
    match = re.search(r"(\d+) characters of text were not spoken", errors[0]["message"])
    assert match is not None
    # The whole clauses the client heard are voiced (all voiced audio is played before the
    # error); of the clause that was cut, the words whose audio fully arrived count as
    # voiced too, so the unspoken count ends at a word inside that clause.
    voiced_chars, total, cut_clause = 0, 0, ""
    for clause, frames in zip(CLAUSES, clause_frames(TEXT), strict=True):
        if total + frames > heard:
            cut_clause = clause
            break
        total += frames
        voiced_chars += len(clause)
    assert 0 < voiced_chars < len(TEXT)
    unspoken = int(match.group(1))
    assert len(TEXT) - voiced_chars - len(cut_clause) <= unspoken <= len(TEXT) - voiced_chars
