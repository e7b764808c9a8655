"""The whole demo in a real browser: headless Chromium opens the page from a real orchestrator
(real redis-server, real Piper worker), connects over WebRTC, hears the TTS voice, and is
interrupted by its fake microphone: a WAV of 3 s of silence, then Piper speech.

Loopback only. The orchestrator offers only 127.0.0.1, but Chromium pairs every interface it
has with it (here it chose 192.0.2.2 -> 127.0.0.1), so the scenario runs in a private network
namespace that has nothing but `lo` (`unshare -n`, as ../shared/FIELD_NOTES.md suggests):
redis-server, the worker, the orchestrator and the browser all start inside it, and the test
checks that the candidate pair the browser selected is 127.0.0.1 on both ends. Where no
namespace can be made (no root, no user namespaces) the scenario runs in place and only the
server's end is checked.

`python -m tests.integration.test_browser_demo RESULT.json` runs the scenario alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from duplex.devtools.redis_server import RedisProcess, start_redis
from duplex.orchestrator.app import OrchestratorServer

from tests.integration.browser import REPO, open_chromium, require_chromium
from tests.integration.mic_audio import piper_speech, silence
from tests.integration.orchestrator_fixtures import (
    orch_config,
    running_orchestrator,
    wait_for_workers,
)
from tests.integration.worker_fixtures import piper_config, running_worker

MIC_RATE = 48000
QUIET_MS = 3000
MODEL = "piper-en-joe-medium"
WORKER = "tts-piper@0"
# Long enough that the voice still speaks when the mic's speech starts, 3 s after the
# microphone opens (when the page connects).
TEXT = (
    "Welcome to the duplex voice demo. This sentence is long on purpose, so that there is "
    "still plenty left to say when you start talking over it. After that comes a second "
    "sentence, and a third one, which nobody should ever hear in this test."
)
INTERRUPTION = "Sorry to interrupt, could you stop talking for a moment please?"
SCENARIO_LIMIT_S = 150
SELF = "tests.integration.test_browser_demo"  # run as a module inside the namespace
STATE = """(() => {
  const d = window.duplexDemo;
  return {state: d.state, mic: d.mic, error: d.error, session: d.session,
          firstAudioMs: d.firstAudioMs, firstPacketMs: d.firstPacketMs,
          bargeIns: d.bargeIns, stats: d.statsInbound,
          path: d.path, utterances: d.utterances.map(u => ({index: u.index, state: u.state})),
          events: d.events.filter(e => e.dir === "in").map(e => e.type)};
})()"""
# Waits for the BargeIn message, then reads the inbound statistics every 20 ms for 1.2 s:
# rows of [ms since the message, packets, bytes, energy].
CUT_TRACE = """(async () => {
  const d = window.duplexDemo;
  const limit = performance.now() + 25000;
  while (!d.bargeIns.length) {
    if (performance.now() > limit) throw new Error("no BargeIn within 25 s");
    await new Promise(r => setTimeout(r, 5));
  }
  const at = d.events.find(e => e.type === "BargeIn").at;
  const rows = [];
  while (performance.now() - at < 1200) {
    (await d.pc.getStats()).forEach(s => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        rows.push([performance.now() - at, s.packetsReceived, s.bytesReceived, s.totalAudioEnergy]);
      }
    });
    await new Promise(r => setTimeout(r, 20));
  }
  return rows;
})()"""
SPEECH_PACKET_BYTES = 20  # Opus packets of digital silence are 3 bytes from aiortc
CUT_SETTLED_MS = 200  # the server's output lead plus Chrome's stats refresh, with room
SHOWN = """(() => ({
  heard: document.querySelector('[data-testid=heard-text]')?.textContent,
  bargein: document.querySelector('[data-testid=bargein]')?.innerText,
  latency: document.querySelector('[data-testid=bargein-latency]').textContent,
  firstAudio: document.querySelector('[data-testid=first-audio]').textContent,
  utteranceState: document.querySelector('[data-testid=utterance-state]')?.textContent,
}))()"""


# -- the scenario (runs in the namespace) ---------------------------------------------------


def write_mic_wav(path: Path) -> Path:
    """3 s of silence, then real Piper speech, then quiet: 48 kHz mono 16-bit."""
    (speech,) = piper_speech([INTERRUPTION], MIC_RATE)
    audio = np.concatenate([silence(MIC_RATE, QUIET_MS), speech, silence(MIC_RATE, 2000)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MIC_RATE)
        out.writeframes(audio.astype("<i2").tobytes())
    return path


@asynccontextmanager
async def demo_stack(redis_url: str) -> AsyncIterator[OrchestratorServer]:
    """A real orchestrator (WebRTC offering 127.0.0.1 only) in front of a real Piper worker."""
    base = orch_config(redis_url)
    webrtc = replace(base.transport.webrtc, host_addresses=("127.0.0.1",), ice_servers=())
    config = replace(base, transport=replace(base.transport, webrtc=webrtc))
    async with (
        running_worker(piper_config(redis_url, name=WORKER, inference_threads=1)),
        running_orchestrator(config) as server,
    ):
        await wait_for_workers(server, {WORKER})
        yield server


async def scenario(work: Path) -> dict[str, Any]:
    """Connect, speak, get interrupted; returns what the page knew and showed."""
    wav = await asyncio.to_thread(write_mic_wav, work / "silence-then-speech.wav")
    redis: RedisProcess = await asyncio.to_thread(start_redis)
    try:
        async with (
            demo_stack(redis.url) as orch,
            open_chromium(work, fake_mic=wav) as browser,
        ):
            await browser.navigate(f"{orch.http_url}/?processing=0")
            await browser.wait_for(
                "window.duplexDemo?.ready && window.duplexDemo.models.length > 0",
                what="the page to list the registry's models",
            )
            await browser.evaluate(
                f"""(() => {{
                  document.querySelector('[data-testid=model-select]').value = {MODEL!r};
                  document.querySelector('[data-testid=policy-select]').value = 'stop';
                  document.querySelector('[data-testid=text]').value = {TEXT!r};
                  document.querySelector('[data-testid=model-select]')
                    .dispatchEvent(new Event('change'));
                }})()"""
            )
            await browser.click("connect")
            await browser.wait_for(
                "window.duplexDemo.state === 'connected'", limit_s=20, what="the WebRTC connection",
                explain=STATE,
            )  # fmt: skip
            await browser.click("speak")

            # The voice arrives: packets grow and the decoded level rises above zero.
            await browser.wait_for(
                "window.duplexDemo.firstAudioMs !== null", limit_s=20, what="the first audio",
                explain=STATE,
            )  # fmt: skip
            playing = await browser.wait_for(
                "(() => { const s = window.duplexDemo.statsInbound;"
                " return s.audioLevel > 0 && s.packetsReceived > 0 ? s : null; })()",
                what="inbound audio with a level above zero",
                explain=STATE,
            )
            more = await browser.wait_for(
                "(() => { const n = window.duplexDemo.statsInbound.packetsReceived;"
                f" return n > {playing['packetsReceived']} ? n : 0; }})()",
                what="more packets",
            )

            # The fake mic talks 3 s in: the barge-in is shown, the utterance ends. What the
            # browser receives around it is traced from its statistics.
            cut = await browser.evaluate(CUT_TRACE, limit_s=30)
            await browser.wait_for(
                "window.duplexDemo.events.some(e => e.type === 'AudioEnd')",
                what="AudioEnd after the cut",
                explain=STATE,
            )
            state = await browser.evaluate(STATE)
            shown = await browser.evaluate(SHOWN)
            shot = await browser.screenshot(work / "demo-bargein.png")
    finally:
        await asyncio.to_thread(redis.stop)
    return {
        "state": state,
        "shown": shown,
        "playing": playing,
        "packets_later": more,
        "cut": cut,
        "screenshot": str(shot),
        "loopback_only": loopback_only(),
    }


# -- isolation --------------------------------------------------------------------------------


def loopback_only() -> bool:
    """This process's network namespace has no interface but `lo`."""
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def can_isolate() -> bool:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(
        ["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10
    )
    return probe.returncode == 0


def run_isolated(result: Path) -> subprocess.CompletedProcess[str]:
    """The scenario in a new network namespace with only `lo` (up)."""
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script, "sh", sys.executable, "-m", SELF, str(result)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SCENARIO_LIMIT_S,
    )  # fmt: skip


def main(argv: list[str]) -> int:
    """`python -m tests.integration.test_browser_demo RESULT.json`: the scenario, its result
    as JSON in RESULT.json; exit status 1 with the traceback on stderr when it fails."""
    result = Path(argv[0])
    try:
        with tempfile.TemporaryDirectory(prefix="duplex-browser-demo-") as work:
            outcome = asyncio.run(scenario(Path(work)))
            shot = Path(outcome["screenshot"])
            kept = result.with_name(shot.name)
            shutil.copyfile(shot, kept)
            outcome["screenshot"] = str(kept)
    except BaseException:
        traceback.print_exc()
        return 1
    result.write_text(json.dumps(outcome, indent=2))
    return 0


# -- the test ---------------------------------------------------------------------------------


@pytest.mark.timeout(SCENARIO_LIMIT_S + 30)
async def test_page_speaks_over_webrtc_and_shows_the_barge_in(tmp_path: Path) -> None:
    require_chromium()
    if not loopback_only() and await asyncio.to_thread(can_isolate):
        result = tmp_path / "result.json"
        done = await asyncio.to_thread(run_isolated, result)
        assert done.returncode == 0, f"the scenario failed:\n{done.stdout}\n{done.stderr}"
        outcome = json.loads(result.read_text())
    else:
        outcome = await scenario(tmp_path)
    check(outcome)


def last_speech_ms(rows: list[list[float]]) -> float:
    """When, after the BargeIn message, the last read with packets of sound was taken."""
    last = 0.0
    for before, after in itertools.pairwise(rows):
        packets = after[1] - before[1]
        if packets and (after[2] - before[2]) / packets > SPEECH_PACKET_BYTES:
            last = after[0]
    return last


def check(outcome: dict[str, Any]) -> None:
    state, shown = outcome["state"], outcome["shown"]
    assert state["state"] == "connected" and state["mic"] == "on", state
    assert state["error"] is None, state["error"]
    session = state["session"]
    assert session["model_id"] == MODEL and session["worker"] == WORKER

    # Audio arrived: first audio measured, packets growing, a decoded level above zero.
    assert state["firstAudioMs"] > 0
    assert 0 < state["firstPacketMs"] <= state["firstAudioMs"]
    assert shown["firstAudio"].endswith(" ms")
    assert outcome["playing"]["audioLevel"] > 0
    assert outcome["packets_later"] > outcome["playing"]["packetsReceived"] > 0

    # One barge-in, with the server's figures and what was heard.
    (barge,) = state["bargeIns"]
    assert barge["utterance"] == 0
    assert barge["at_ms"] > 0 and barge["latency_ms"] > 0
    assert barge["heard_precision"] in ("clause", "estimate", "alignment")
    assert 0 < barge["heard_chars"] < len(TEXT)
    assert TEXT.startswith(barge["heard_text"])
    assert len(barge["heard_text"]) == barge["heard_chars"]
    assert barge["resumed"] is False  # policy stop: BargeInEnd {resumed: false}
    events = state["events"]
    assert events[0] == "SessionStarted"
    assert events.index("BargeIn") < events.index("BargeInEnd") < events.index("AudioEnd")
    assert state["utterances"] == [{"index": 0, "state": "stopped"}]

    # The page shows it: the heard text highlighted within the utterance, and the figures.
    assert shown["heard"] == barge["heard_text"]
    # The page rounds half up (JavaScript), Python's round() to even: either is the figure.
    shown_ms = {math.floor(barge["latency_ms"]), math.ceil(barge["latency_ms"])}
    assert any(f"server latency {ms} ms" in shown["bargein"] for ms in shown_ms)
    assert barge["heard_precision"] in shown["bargein"]
    assert shown["latency"] in {f"{ms} ms" for ms in shown_ms}
    assert shown["utteranceState"] == "stopped"

    # After the cut: silence or nothing. Judged by the packets' sizes as they arrive, since
    # headless Chromium's playout (and so its decoded energy) runs a few hundred ms behind.
    settled = [r for r in outcome["cut"] if r[0] >= CUT_SETTLED_MS]
    assert len(settled) >= 10
    packets = settled[-1][1] - settled[0][1]
    if packets:
        assert (settled[-1][2] - settled[0][2]) / packets <= SPEECH_PACKET_BYTES, settled
    print(f"last packet of sound {last_speech_ms(outcome['cut']):.0f} ms after the BargeIn message")

    # Media went over loopback: the server's end always; both ends in the namespace.
    path = state["path"]
    assert path is not None and path["remoteAddress"] == "127.0.0.1", path
    if outcome["loopback_only"]:
        assert path["localAddress"] == "127.0.0.1", path
    assert Path(outcome["screenshot"]).is_file()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
