"""Voice-agent frameworks' OpenAI TTS clients against our `/v1/audio/speech`, each run in its
own virtualenv (their pins clash with ours) by test_openai_frameworks.py:

    python openai_peer_clients.py livekit|pipecat BASE_URL OUT.pcm TEXT [MODEL]

Prints one JSON line: the sample rate, the bytes of audio, the frames the framework produced,
and the seconds to its first audio; writes the s16le audio to OUT.pcm.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any


async def livekit(base_url: str, text: str, model: str) -> tuple[int, bytes, int, float]:
    """livekit-plugins-openai's TTS (no LiveKit server): its ChunkedStream, frame by frame."""
    from livekit.plugins import openai  # type: ignore[import-not-found]

    tts = openai.TTS(base_url=base_url, api_key="unused", model=model, voice="alloy")
    pcm, frames, rate, first = bytearray(), 0, 0, float("nan")
    start = time.perf_counter()
    try:
        async with tts.synthesize(text) as stream:
            async for event in stream:
                if frames == 0:
                    first = time.perf_counter() - start
                frames += 1
                rate = event.frame.sample_rate
                pcm.extend(bytes(event.frame.data))
    finally:
        await tts.aclose()
    return rate, bytes(pcm), frames, first


async def pipecat(base_url: str, text: str, model: str) -> tuple[int, bytes, int, float]:
    """Pipecat's OpenAITTSService in a minimal pipeline: TTSSpeakFrame in, audio frames out."""
    from loguru import logger  # type: ignore[import-not-found]
    from pipecat.frames.frames import (  # type: ignore[import-not-found]
        EndFrame,
        ErrorFrame,
        TTSAudioRawFrame,
        TTSSpeakFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline  # type: ignore[import-not-found]
    from pipecat.pipeline.worker import (  # type: ignore[import-not-found]
        PipelineParams,
        PipelineWorker,
    )
    from pipecat.processors.frame_processor import FrameProcessor  # type: ignore[import-not-found]
    from pipecat.services.openai.tts import OpenAITTSService  # type: ignore[import-not-found]
    from pipecat.workers.runner import WorkerRunner  # type: ignore[import-not-found]

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    pcm, got = bytearray(), {"frames": 0, "rate": 0, "first": float("nan")}
    done = asyncio.Event()
    errors: list[str] = []
    start = 0.0

    class Sink(FrameProcessor):  # type: ignore[misc]
        async def process_frame(self, frame: Any, direction: Any) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TTSAudioRawFrame):
                if not got["frames"]:
                    got["first"] = time.perf_counter() - start
                got["frames"] += 1
                got["rate"] = frame.sample_rate
                pcm.extend(frame.audio)
            elif isinstance(frame, TTSStoppedFrame):
                done.set()
            elif isinstance(frame, ErrorFrame):
                errors.append(str(frame.error))
                done.set()
            await self.push_frame(frame, direction)

    tts = OpenAITTSService(api_key="unused", base_url=base_url, voice="alloy", model=model)
    worker = PipelineWorker(
        Pipeline([tts, Sink()]), params=PipelineParams(), idle_timeout_secs=None
    )
    runner = asyncio.create_task(WorkerRunner(handle_sigint=False).run(worker))
    try:
        await asyncio.sleep(0.5)  # the StartFrame goes through before the text
        start = time.perf_counter()
        await worker.queue_frame(TTSSpeakFrame(text))
        async with asyncio.timeout(60):
            await done.wait()
        await worker.queue_frame(EndFrame())
        async with asyncio.timeout(30):
            await runner
    finally:
        runner.cancel()
    if errors:
        raise RuntimeError("; ".join(errors))
    return int(got["rate"]), bytes(pcm), int(got["frames"]), float(got["first"])


def main() -> None:
    kind, base_url, out, text = sys.argv[1:5]
    model = sys.argv[5] if len(sys.argv) > 5 else "tts-1"
    client = {"livekit": livekit, "pipecat": pipecat}[kind]
    rate, pcm, frames, first = asyncio.run(client(base_url, text, model))
    Path(out).write_bytes(pcm)
    print(json.dumps({"sample_rate": rate, "bytes": len(pcm), "frames": frames, "first_s": first}))


if __name__ == "__main__":
    main()
