"""The client side of a peer benchmark; runs in the peer's own virtualenv (stdlib + the peer's
packages only, nothing from the product or the bench).

    python bench/peers_client.py {http,wyoming} --port P --texts FILE --concurrency N
        [--warmups 2] [--deadline-s 240]

N clients at once, each speaking every text in order. Prints one JSON object on its last stdout
line: first_audio_s (per utterance), audio_s, wall_s. For the HTTP server the first audio is the
whole WAV (it returns whole files); for Wyoming it is the first audio-chunk event.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import sys
import time
import urllib.request
import wave
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def http_one(port: str, text: str, deadline_s: float) -> tuple[float, float]:
    """(seconds to the whole WAV, audio seconds) for one POST to piper.http_server."""
    body = json.dumps({"text": text}).encode("utf-8")
    request = urllib.request.Request(
        f"http://{HOST}:{port}/synthesize", data=body, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.perf_counter()
    with opener.open(request, timeout=deadline_s) as response:
        data = response.read()
    first = time.perf_counter() - start
    with wave.open(io.BytesIO(data), "rb") as wav:
        audio_s = wav.getnframes() / wav.getframerate()
    return first, audio_s


async def http_client(port: str, texts: list[str], deadline_s: float) -> list[tuple[float, float]]:
    return [await asyncio.to_thread(http_one, port, t, deadline_s) for t in texts]


async def wyoming_one(port: str, text: str) -> tuple[float, float]:
    """(seconds to the first audio-chunk, audio seconds) for one Synthesize event."""
    from wyoming.audio import AudioChunk, AudioStop  # type: ignore[import-not-found]
    from wyoming.client import AsyncTcpClient  # type: ignore[import-not-found]
    from wyoming.tts import Synthesize  # type: ignore[import-not-found]

    first = float("nan")
    audio_s = 0.0
    async with AsyncTcpClient(HOST, int(port)) as client:
        start = time.perf_counter()
        await client.write_event(Synthesize(text=text).event())
        while True:  # bounded by the caller's deadline
            event = await client.read_event()
            if event is None:
                raise ConnectionError("wyoming server closed the connection mid-utterance")
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                if audio_s == 0.0:
                    first = time.perf_counter() - start
                audio_s += len(chunk.audio) / (chunk.rate * chunk.width * chunk.channels)
            elif AudioStop.is_type(event.type):
                return first, audio_s


async def wyoming_client(port: str, texts: list[str], _: float) -> list[tuple[float, float]]:
    return [await wyoming_one(port, t) for t in texts]


class PipecatSession:
    """One Pipecat pipeline (its own PiperTTSService, so its own model) speaking texts:
    TTSSpeakFrame in; first audio = first TTSAudioRawFrame out of the pipeline."""

    def __init__(self, data_dir: str, stop_after_s: float) -> None:
        from loguru import logger  # type: ignore[import-not-found]
        from pipecat.pipeline.pipeline import Pipeline  # type: ignore[import-not-found]
        from pipecat.pipeline.worker import (  # type: ignore[import-not-found]
            PipelineParams,
            PipelineWorker,
        )
        from pipecat.services.piper.tts import PiperTTSService  # type: ignore[import-not-found]
        from pipecat.workers.runner import WorkerRunner  # type: ignore[import-not-found]

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
        self._start = 0.0
        self._first = float("nan")
        self._audio = 0.0
        self._done = asyncio.Event()
        try:
            # Pipecat ends an audio context that is quiet for stop_frame_timeout_s (3 s) with a
            # TTSStoppedFrame, and audio that comes later gets no stop frame of its own: on a
            # loaded machine a first chunk can take that long, so wait as long as the deadline.
            tts = PiperTTSService(
                voice_id=VOICE, download_dir=Path(data_dir), stop_frame_timeout_s=stop_after_s
            )
        except TypeError:  # a Pipecat without the setting
            tts = PiperTTSService(voice_id=VOICE, download_dir=Path(data_dir))
        self._worker = PipelineWorker(
            Pipeline([tts, self._sink()]), params=PipelineParams(), idle_timeout_secs=None
        )
        self._runner = WorkerRunner(handle_sigint=False)
        self._running: asyncio.Task[None] | None = None

    def _sink(self) -> Any:
        from pipecat.frames.frames import (  # type: ignore[import-not-found]
            TTSAudioRawFrame,
            TTSStoppedFrame,
        )
        from pipecat.processors.frame_processor import (  # type: ignore[import-not-found]
            FrameProcessor,
        )

        session = self

        class Sink(FrameProcessor):  # type: ignore[misc]
            async def process_frame(self, frame: Any, direction: Any) -> None:
                await super().process_frame(frame, direction)
                if isinstance(frame, TTSAudioRawFrame):
                    if session._audio == 0.0:
                        session._first = time.perf_counter() - session._start
                    rate = frame.sample_rate * 2 * frame.num_channels
                    session._audio += len(frame.audio) / rate
                elif isinstance(frame, TTSStoppedFrame) and session._audio > 0.0:
                    # A stop frame before any audio (the quiet timeout above) does not end it.
                    session._done.set()
                await self.push_frame(frame, direction)

        return Sink()

    async def start(self) -> None:
        self._running = asyncio.create_task(self._runner.run(self._worker))
        await asyncio.sleep(0.5)  # the StartFrame goes through before the first text

    async def speak(self, texts: list[str], deadline_s: float) -> list[tuple[float, float]]:
        from pipecat.frames.frames import TTSSpeakFrame  # type: ignore[import-not-found]

        results: list[tuple[float, float]] = []
        for text in texts:
            self._done.clear()
            self._start, self._first, self._audio = time.perf_counter(), float("nan"), 0.0
            await self._worker.queue_frame(TTSSpeakFrame(text))
            async with asyncio.timeout(deadline_s):
                await self._done.wait()
            results.append((self._first, self._audio))
        return results

    async def close(self) -> None:
        from pipecat.frames.frames import EndFrame  # type: ignore[import-not-found]

        if self._running is None:
            return
        try:
            await self._worker.queue_frame(EndFrame())
            async with asyncio.timeout(30):
                await self._running
        finally:
            self._running.cancel()


async def run_pipecat(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """Pipelines built and started before the clock starts; CPU and peak RSS of this process
    (the pipelines run here)."""
    sessions = [PipecatSession(args.port, args.deadline_s) for _ in range(args.concurrency)]
    try:
        async with asyncio.timeout(args.deadline_s):
            for session in sessions:
                await session.start()
            await sessions[0].speak(texts[: args.warmups], args.deadline_s)
            cpu0 = sum(os.times()[:2])
            start = time.perf_counter()
            per_client = await asyncio.gather(*(s.speak(texts, args.deadline_s) for s in sessions))
            wall = time.perf_counter() - start
            cpu = sum(os.times()[:2]) - cpu0
    finally:
        for session in sessions:
            await session.close()
    results = [r for rs in per_client for r in rs]
    return {
        "concurrency": args.concurrency,
        "first_audio_s": [r[0] for r in results],
        "audio_s": sum(r[1] for r in results),
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


VOICE = "en_US-joe-medium"
CLIENTS = {"http": http_client, "wyoming": wyoming_client}


async def run(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    client = CLIENTS[args.kind]
    async with asyncio.timeout(args.deadline_s):
        await client(args.port, texts[: args.warmups], args.deadline_s)
        start = time.perf_counter()
        per_client = await asyncio.gather(
            *(client(args.port, texts, args.deadline_s) for _ in range(args.concurrency))
        )
        wall = time.perf_counter() - start
    results = [r for rs in per_client for r in rs]
    return {
        "concurrency": args.concurrency,
        "first_audio_s": [r[0] for r in results],
        "audio_s": sum(r[1] for r in results),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=[*sorted(CLIENTS), "pipecat"])
    parser.add_argument("--port", required=True, help="server port; pipecat: the voice folder")
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--deadline-s", type=float, default=240.0)
    args = parser.parse_args(argv)
    texts = [t for t in args.texts.read_text(encoding="utf-8").splitlines() if t.strip()]
    runner = run_pipecat if args.kind == "pipecat" else run
    print(json.dumps(asyncio.run(runner(args, texts))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
