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
import sys
import time
import urllib.request
import wave
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def http_one(port: int, text: str, deadline_s: float) -> tuple[float, float]:
    """(seconds to the whole WAV, audio seconds) for one POST to piper.http_server."""
    body = json.dumps({"text": text}).encode("utf-8")
    request = urllib.request.Request(
        f"http://{HOST}:{port}/", data=body, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.perf_counter()
    with opener.open(request, timeout=deadline_s) as response:
        data = response.read()
    first = time.perf_counter() - start
    with wave.open(io.BytesIO(data), "rb") as wav:
        audio_s = wav.getnframes() / wav.getframerate()
    return first, audio_s


async def http_client(port: int, texts: list[str], deadline_s: float) -> list[tuple[float, float]]:
    return [await asyncio.to_thread(http_one, port, t, deadline_s) for t in texts]


async def wyoming_one(port: int, text: str) -> tuple[float, float]:
    """(seconds to the first audio-chunk, audio seconds) for one Synthesize event."""
    from wyoming.audio import AudioChunk, AudioStop  # type: ignore[import-not-found]
    from wyoming.client import AsyncTcpClient  # type: ignore[import-not-found]
    from wyoming.tts import Synthesize  # type: ignore[import-not-found]

    first = float("nan")
    audio_s = 0.0
    async with AsyncTcpClient(HOST, port) as client:
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


async def wyoming_client(port: int, texts: list[str], _: float) -> list[tuple[float, float]]:
    return [await wyoming_one(port, t) for t in texts]


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
    parser.add_argument("kind", choices=sorted(CLIENTS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--deadline-s", type=float, default=240.0)
    args = parser.parse_args(argv)
    texts = [t for t in args.texts.read_text(encoding="utf-8").splitlines() if t.strip()]
    print(json.dumps(asyncio.run(run(args, texts))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
