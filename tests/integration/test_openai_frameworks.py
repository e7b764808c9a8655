"""Voice-agent frameworks pointed at `/v1/audio/speech` with a base URL, as their docs show:
LiveKit Agents' OpenAI plugin and Pipecat's OpenAI TTS service.

Their pins clash with ours (Pipecat's protobuf, for one), so each runs in its own virtualenv
under .run/openai-clients/, made by this test on first use (python3 -m venv + pip from the
package index) and reused after. The client script is openai_peer_clients.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.openai_fixtures import PIPER_MODEL, fleet, transcript_wer
from tests.integration.speech_check import load_whisper

REPO = Path(__file__).resolve().parents[2]
VENVS = REPO / ".run" / "openai-clients"
CLIENT = Path(__file__).with_name("openai_peer_clients.py")
PACKAGES = {
    "livekit": ["livekit-agents", "livekit-plugins-openai"],
    "pipecat": ["pipecat-ai[openai]"],
}
SENTENCE = (
    "The quick brown fox jumps over the lazy dog. "
    "Please bring your notes to the meeting, and arrive early."
)


def ensure_venv(kind: str) -> Path:
    """The virtualenv's python, made and installed once; skips when pip cannot install."""
    venv = VENVS / kind
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists():
        return python
    VENVS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *PACKAGES[kind]],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        pytest.skip(f"{kind}: pip could not install {PACKAGES[kind]}: {done.stderr[-400:]}")
    marker.write_text(" ".join(PACKAGES[kind]) + "\n")
    return python


async def run_client(python: Path, kind: str, base_url: str, out: Path, model: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = await asyncio.create_subprocess_exec(
        str(python), str(CLIENT), kind, base_url, str(out), SENTENCE, model,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        async with asyncio.timeout(120):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    return json.loads(stdout.decode().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def whisper() -> Any:
    return load_whisper()


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("livekit", "tts-1"),  # mp3 (the plugin's default format), bytes streamed
        ("livekit", "gpt-4o-mini-tts"),  # the plugin's default model: mp3 over sse
        ("pipecat", "tts-1"),  # pcm
    ],
)
async def test_a_frameworks_openai_tts_speaks_through_the_fleet(
    redis_url: str, tmp_path: Path, whisper: Any, kind: str, model: str
) -> None:
    """The framework's own client, with only a base URL changed, gets audio frames of the
    Piper voice that Whisper understands."""
    python = await asyncio.to_thread(ensure_venv, kind)
    out = tmp_path / "speech.pcm"
    async with fleet(redis_url, piper=True) as orch:
        got = await run_client(python, kind, f"{orch.http_url}/v1", out, model)
    print(f"\n{kind} ({model}): {got['frames']} frames at {got['sample_rate']} Hz, "
          f"first audio after {got['first_s'] * 1000:.0f} ms")  # fmt: skip
    assert got["frames"] > 0 and got["sample_rate"] == 24000
    wer, text = transcript_wer(whisper, out.read_bytes(), SENTENCE, got["sample_rate"])
    assert wer <= 0.10, f"{PIPER_MODEL} via {kind}: {text!r}"
