"""`python -m duplex.cli`: speak text through the orchestrator and report what came back.

One session per connection: `SessionStart`, the text as `TextChunk`s (whole, or word by word as
a language model would emit it), then every binary frame until `AudioEnd`, then `SessionEnd`.
Per session it prints the worker that served it, the first-audio latency (from sending the
first `TextChunk` to the first binary frame), the audio and wall seconds and their ratio. With
`--concurrency N` the sessions run at once and it prints how many each worker served: the
deployment guide's load-distribution test.

Exit status: 0 when every session ended with its audio; 1 when the server answered with an
`Error` (its code and message are printed); 3 on a connection failure, a timeout or a reply
that breaks the protocol; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from duplex.audio.frames import frame_bytes
from duplex.audio.wav import encode_wav
from duplex.orchestrator.protocol import (
    AudioEnd,
    Error,
    ProtocolError,
    SessionEnd,
    SessionEnded,
    SessionStart,
    SessionStarted,
    TextChunk,
    WorkerFailover,
    parse_server_message,
)

DEFAULT_TEXT = "Hello there, friend. The meeting starts at nine."
EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_CLIENT_FAILURE = 3
_WORDS = re.compile(r"\s*\S+\s*")


@dataclass(frozen=True)
class CliOptions:
    """What to say, where, and how many times at once."""

    host: str = "ws://localhost:8080"
    text: str = DEFAULT_TEXT
    model: str | None = None
    language: str = "en"
    sample_rate: int = 48000
    concurrency: int = 1
    out: Path | None = None
    word_by_word: bool = False
    word_interval_ms: float = 50.0
    timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout must be > 0")
        if self.word_interval_ms < 0:
            raise ValueError("word interval must be >= 0")
        if not self.text.strip():
            raise ValueError("text must not be empty")


@dataclass(frozen=True)
class SessionReport:
    """What one session received, with its timings."""

    index: int
    session_id: str
    model_id: str
    workers: tuple[str, ...]  # the first worker, then each failover target
    sample_rate: int
    frames: int
    first_audio_ms: float | None
    wall_s: float
    pcm: bytes = field(repr=False)
    out: Path | None = None

    @property
    def worker(self) -> str:
        """The worker that spoke the end of the utterance."""
        return self.workers[-1]

    @property
    def audio_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    @property
    def rtf(self) -> float | None:
        """Wall seconds per audio second (about 1.0 at the orchestrator's real-time pacing)."""
        return self.wall_s / self.audio_s if self.audio_s > 0 else None


class ServerError(Exception):
    """The orchestrator answered with an `Error` message."""

    def __init__(self, index: int, code: str, message: str) -> None:
        super().__init__(f"session {index}: server error {code}: {message}")
        self.index = index
        self.code = code
        self.message = message


class ClientFailure(Exception):
    """No answer in time, a lost connection, or a reply that breaks the protocol."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"session {index}: {message}")
        self.index = index


def split_words(text: str) -> list[str]:
    """Cut text into word chunks that keep their whitespace, so the chunks join back to it."""
    return _WORDS.findall(text) or [text]


def output_path(out: Path, index: int, concurrency: int) -> Path:
    """`out` itself for a single session, else `name-<index>.wav` beside it."""
    if concurrency == 1:
        return out
    return out.with_name(f"{out.stem}-{index}{out.suffix or '.wav'}")


async def speak(options: CliOptions, index: int = 1) -> SessionReport:
    """Run one session to its `AudioEnd`; raises `ServerError` or `ClientFailure`."""
    try:
        async with connect(
            options.host,
            open_timeout=options.timeout_s,
            close_timeout=options.timeout_s,
            proxy=None,  # the orchestrator is reached directly, never through a proxy
        ) as ws:
            report = await _session(ws, options, index)
    except InvalidStatus as exc:
        raise ClientFailure(
            index, f"{options.host} refused the connection (HTTP {exc.response.status_code})"
        ) from exc
    except TimeoutError as exc:
        raise ClientFailure(
            index, f"no answer from {options.host} within {options.timeout_s:g} s"
        ) from exc
    except (OSError, WebSocketException) as exc:
        raise ClientFailure(index, f"{options.host}: {exc}") from exc
    if options.out is not None:
        path = output_path(options.out, index, options.concurrency)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_wav(report.pcm, report.sample_rate))
        report = dataclasses.replace(report, out=path)
    return report


async def _session(ws: ClientConnection, options: CliOptions, index: int) -> SessionReport:
    start = SessionStart(
        model_id=options.model, language=options.language, sample_rate=options.sample_rate
    )
    await ws.send(start.to_json())
    started = await _expect_started(ws, options.timeout_s, index)
    receiver = _Receiver(ws, started, options.timeout_s, index)
    chunks = split_words(options.text) if options.word_by_word else [options.text]
    t0 = time.monotonic()
    # Word by word, audio may start before the last word is sent: send and receive at once.
    sender = asyncio.create_task(_send_text(ws, chunks, options.word_interval_ms / 1000))
    try:
        await receiver.until_audio_end()
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    wall = time.monotonic() - t0
    await ws.send(SessionEnd().to_json())
    await receiver.until_session_ended()
    return SessionReport(
        index=index,
        session_id=started.session_id,
        model_id=started.model_id,
        workers=tuple(receiver.workers),
        sample_rate=started.sample_rate,
        frames=receiver.frames,
        first_audio_ms=None
        if receiver.first_frame_at is None
        else (receiver.first_frame_at - t0) * 1000,
        wall_s=wall,
        pcm=b"".join(receiver.pcm),
    )


async def _send_text(ws: ClientConnection, chunks: Sequence[str], interval_s: float) -> None:
    for i, chunk in enumerate(chunks):
        if i and interval_s:
            await asyncio.sleep(interval_s)
        await ws.send(TextChunk(text=chunk, is_final=i == len(chunks) - 1).to_json())


async def _recv(
    ws: ClientConnection, timeout_s: float, index: int, waiting_for: str
) -> str | bytes:
    try:
        async with asyncio.timeout(timeout_s):
            return await ws.recv()
    except TimeoutError:
        raise ClientFailure(
            index, f"nothing received for {timeout_s:g} s while waiting for {waiting_for}"
        ) from None


def _parse(raw: str, index: int) -> object:
    try:
        return parse_server_message(raw)
    except ProtocolError as exc:
        raise ClientFailure(index, f"unreadable server message: {exc.message}") from None


async def _expect_started(ws: ClientConnection, timeout_s: float, index: int) -> SessionStarted:
    raw = await _recv(ws, timeout_s, index, "SessionStarted")
    if isinstance(raw, bytes):
        raise ClientFailure(index, "audio arrived before SessionStarted")
    message = _parse(raw, index)
    if isinstance(message, Error):
        raise ServerError(index, message.code.value, message.message)
    if not isinstance(message, SessionStarted):
        raise ClientFailure(index, f"expected SessionStarted, got {raw[:200]}")
    return message


class _Receiver:
    """Collects one utterance's frames and the messages around them."""

    def __init__(
        self, ws: ClientConnection, started: SessionStarted, timeout_s: float, index: int
    ) -> None:
        self._ws = ws
        self._timeout_s = timeout_s
        self._index = index
        self._frame_bytes = frame_bytes(started.sample_rate)
        self.workers = [started.worker]
        self.pcm: list[bytes] = []
        self.frames = 0
        self.first_frame_at: float | None = None

    async def until_audio_end(self) -> None:
        while True:
            raw = await _recv(self._ws, self._timeout_s, self._index, "audio")
            if isinstance(raw, bytes):
                self._on_frame(raw)
                continue
            message = _parse(raw, self._index)
            if isinstance(message, AudioEnd):
                return
            self._on_message(message, raw)

    async def until_session_ended(self) -> None:
        while True:
            raw = await _recv(self._ws, self._timeout_s, self._index, "SessionEnded")
            if isinstance(raw, bytes):
                continue  # nothing is owed after AudioEnd; a late frame changes nothing
            message = _parse(raw, self._index)
            if isinstance(message, SessionEnded):
                return
            self._on_message(message, raw)

    def _on_frame(self, frame: bytes) -> None:
        if len(frame) != self._frame_bytes:
            raise ClientFailure(
                self._index,
                f"a binary frame of {len(frame)} bytes; 20 ms at this rate is {self._frame_bytes}",
            )
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        self.pcm.append(frame)
        self.frames += 1

    def _on_message(self, message: object, raw: str) -> None:
        if isinstance(message, Error):
            raise ServerError(self._index, message.code.value, message.message)
        if isinstance(message, WorkerFailover):
            self.workers.append(message.to_worker)
            return
        if isinstance(message, SessionEnded):
            raise ClientFailure(self._index, f"session ended early: {message.reason}")
        raise ClientFailure(self._index, f"unexpected message {raw[:200]}")


async def run_sessions(options: CliOptions) -> list[SessionReport | Exception]:
    """Run `options.concurrency` sessions at once; each result is a report or its failure."""
    results = await asyncio.gather(
        *(speak(options, i) for i in range(1, options.concurrency + 1)), return_exceptions=True
    )
    out: list[SessionReport | Exception] = []
    for result in results:
        if isinstance(result, SessionReport | ServerError | ClientFailure):
            out.append(result)
        elif isinstance(result, BaseException):
            raise result  # a bug or a cancellation, not a session outcome
    return out


def format_report(report: SessionReport) -> str:
    first = "-" if report.first_audio_ms is None else f"{report.first_audio_ms:.0f} ms"
    rtf = "-" if report.rtf is None else f"{report.rtf:.2f}"
    line = (
        f"session {report.index}: id={report.session_id} worker={' -> '.join(report.workers)} "
        f"model={report.model_id} first_audio={first} audio={report.audio_s:.2f} s "
        f"wall={report.wall_s:.2f} s rtf={rtf} frames={report.frames}"
    )
    return line + (f" wav={report.out}" if report.out else "")


def format_distribution(reports: Sequence[SessionReport]) -> list[str]:
    """Sessions per worker, and the spread of first-audio latency."""
    per_worker = Counter(r.workers[0] for r in reports)
    lines = [f"sessions per worker ({len(reports)} sessions):"]
    lines += [f"  {name}: {count}" for name, count in sorted(per_worker.items())]
    firsts = sorted(r.first_audio_ms for r in reports if r.first_audio_ms is not None)
    if firsts:
        lines.append(
            f"first audio: min {firsts[0]:.0f} ms, median {statistics.median(firsts):.0f} ms, "
            f"max {firsts[-1]:.0f} ms"
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m duplex.cli",
        description="Speak text through the duplex orchestrator, write the audio as WAV, and "
        "print first-audio latency, the real-time factor and the worker of each session.",
        epilog="exit status: 0 ok, 1 the server sent an Error, 2 bad arguments, "
        "3 connection failure, timeout or protocol violation",
    )
    parser.add_argument("--host", default=CliOptions.host, help="orchestrator URL (%(default)s)")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="what to say")
    parser.add_argument("--model", default=None, help="model_id (default: the router's choice)")
    parser.add_argument("--language", default="en", help="language code (%(default)s)")
    parser.add_argument(
        "--sample-rate", type=int, default=48000, help="output rate in Hz (%(default)s)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="sessions to run at once (%(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the audio to this WAV file (with --concurrency N: one file per session, "
        "NAME-1.wav ... NAME-N.wav)",
    )
    parser.add_argument(
        "--word-by-word",
        action="store_true",
        help="send the text one word per TextChunk, as a language model emits it",
    )
    parser.add_argument(
        "--word-interval-ms",
        type=float,
        default=50.0,
        help="pause between words with --word-by-word (%(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        help="seconds to wait for the connection and for each server message (%(default)s)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> CliOptions:
    """Command-line arguments as `CliOptions`; exits with status 2 on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return CliOptions(
            host=args.host,
            text=args.text,
            model=args.model or None,
            language=args.language,
            sample_rate=args.sample_rate,
            concurrency=args.concurrency,
            out=args.out,
            word_by_word=args.word_by_word,
            word_interval_ms=args.word_interval_ms,
            timeout_s=args.timeout,
        )
    except ValueError as exc:
        parser.error(str(exc))


async def run_cli(options: CliOptions) -> int:
    """Run the sessions, print their reports (and the distribution); returns the exit status."""
    results = await run_sessions(options)
    reports = [r for r in results if isinstance(r, SessionReport)]
    for result in sorted(results, key=_index):
        if isinstance(result, SessionReport):
            print(format_report(result), flush=True)
        else:
            print(f"error: {result}", file=sys.stderr, flush=True)
    if options.concurrency > 1 and reports:
        print("\n".join(format_distribution(reports)), flush=True)
    if any(isinstance(r, ServerError) for r in results):
        return EXIT_SERVER_ERROR
    if any(isinstance(r, ClientFailure) for r in results):
        return EXIT_CLIENT_FAILURE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run_cli(parse_args(argv)))


def _index(result: SessionReport | Exception) -> int:
    return result.index if isinstance(result, SessionReport | ServerError | ClientFailure) else 0


if __name__ == "__main__":
    sys.exit(main())
