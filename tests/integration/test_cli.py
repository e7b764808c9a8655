"""The CLI against a real orchestrator, real tone workers and a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from duplex.audio.frames import frame_bytes
from duplex.audio.wav import decode_wav
from duplex.cli import ClientFailure, CliOptions, parse_args, run_cli, speak
from duplex.devtools.redis_server import free_port
from duplex.orchestrator.app import OrchestratorServer
from duplex.orchestrator.config import load_orchestrator_config
from websockets.asyncio.server import ServerConnection, serve

from tests.integration.worker_fixtures import running_worker, worker_config

WORKERS = ("cli-tone-a", "cli-tone-b")


@pytest.fixture
async def orchestrator(redis_url: str) -> AsyncIterator[str]:
    """Two tone workers and an orchestrator on free ports; yields the orchestrator's ws:// URL."""
    config = load_orchestrator_config(None, {"REDIS_URL": redis_url})
    config = dataclasses.replace(
        config, redis=dataclasses.replace(config.redis, reconcile_interval_ms=200)
    )
    async with (
        running_worker(worker_config(redis_url, name=WORKERS[0])),
        running_worker(worker_config(redis_url, name=WORKERS[1])),
        OrchestratorServer(config, host="127.0.0.1", port=0) as server,
    ):
        view = server.app.state.runtime.view
        async with asyncio.timeout(10):
            version = view.version
            while set(view.workers()) != set(WORKERS):
                version = await view.wait_for_change(version, timeout=10)
        yield server.url


async def test_one_session_reports_its_worker_and_latency_and_writes_the_wav(
    orchestrator: str, tmp_path: Path
) -> None:
    """A report names a live worker, has a first-audio time, and its WAV holds every frame."""
    out = tmp_path / "one.wav"
    report = await speak(CliOptions(host=orchestrator, text="Hello there, friend.", out=out))
    assert report.worker in WORKERS
    assert report.workers == (report.worker,)
    assert report.frames > 0
    assert report.first_audio_ms is not None and 0 < report.first_audio_ms < report.wall_s * 1000
    assert report.audio_s == pytest.approx(report.frames * 0.020)
    assert report.out == out
    wav = decode_wav(out.read_bytes())
    assert wav.sample_rate == 48000
    assert len(wav.pcm) == report.frames * frame_bytes(48000)


async def test_frames_follow_the_requested_sample_rate(orchestrator: str) -> None:
    """At 16 kHz every frame is 640 bytes (the CLI rejects any other size)."""
    report = await speak(CliOptions(host=orchestrator, text="Short.", sample_rate=16000))
    assert report.sample_rate == 16000
    assert len(report.pcm) == report.frames * 640


async def test_word_by_word_text_is_spoken_like_the_whole_text(orchestrator: str) -> None:
    """Sent one word per TextChunk, the utterance yields as much audio as sent whole."""
    text = "Good morning, friends. See you soon."
    whole = await speak(CliOptions(host=orchestrator, text=text))
    words = await speak(
        CliOptions(host=orchestrator, text=text, word_by_word=True, word_interval_ms=10)
    )
    assert words.frames > 0
    assert words.audio_s == pytest.approx(whole.audio_s, rel=0.25)


async def test_concurrent_sessions_print_the_distribution_over_both_workers(
    orchestrator: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--concurrency 4: four reports, one WAV each, and a per-worker count that covers both."""
    argv = ["--host", orchestrator, "--concurrency", "4", "--out", str(tmp_path / "c.wav")]
    assert await run_cli(parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert "sessions per worker (4 sessions):" in out
    counts = {name: out.count(f"worker={name}") for name in WORKERS}
    assert sum(counts.values()) == 4
    assert all(counts.values()), counts  # least_loaded with in-flight counts uses both
    for name, count in counts.items():
        assert f"  {name}: {count}" in out
    written = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
    assert written == [f"c-{i}.wav" for i in (1, 2, 3, 4)]


async def test_a_server_error_exits_1_with_its_code_and_message(
    orchestrator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown model is the server's UNKNOWN_MODEL Error: status 1, code and message shown."""
    code = await run_cli(parse_args(["--host", orchestrator, "--model", "no-such-model"]))
    assert code == 1
    err = capsys.readouterr().err
    assert "server error UNKNOWN_MODEL" in err
    assert "no-such-model" in err


async def test_no_orchestrator_exits_3_naming_the_address(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listening: a connection failure (status 3) that names the URL."""
    host = f"ws://127.0.0.1:{free_port()}"
    assert await run_cli(parse_args(["--host", host, "--timeout", "5"])) == 3
    assert host in capsys.readouterr().err


async def test_a_silent_server_is_given_up_on_after_the_timeout() -> None:
    """A server that accepts but never answers SessionStart fails the session at --timeout."""

    async def silent(connection: ServerConnection) -> None:
        await connection.wait_closed()

    async with serve(silent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        options = CliOptions(host=f"ws://127.0.0.1:{port}", timeout_s=0.5)
        async with asyncio.timeout(10):
            with pytest.raises(ClientFailure, match="waiting for SessionStarted"):
                await speak(options)


async def test_a_frame_of_the_wrong_size_is_a_protocol_failure() -> None:
    """A binary message that is not exactly 20 ms at the session's rate is reported, not kept."""

    async def odd_frames(connection: ServerConnection) -> None:
        await connection.recv()
        await connection.send(
            '{"type": "SessionStarted", "session_id": "s", "model_id": "m", '
            '"worker": "w", "sample_rate": 48000}'
        )
        await connection.recv()
        await connection.send(b"\x00" * 100)
        await connection.wait_closed()

    async with serve(odd_frames, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ClientFailure, match="a binary frame of 100 bytes"):
            await speak(CliOptions(host=f"ws://127.0.0.1:{port}", timeout_s=5))
