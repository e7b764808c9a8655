"""The CLI's argument parsing, output naming, word splitting and report formatting."""

from __future__ import annotations

from pathlib import Path

import pytest
from duplex.cli import (
    DEFAULT_TEXT,
    CliOptions,
    SessionReport,
    format_distribution,
    format_report,
    output_path,
    parse_args,
    split_words,
)


def _report(index: int, workers: tuple[str, ...], first_ms: float | None = 100.0) -> SessionReport:
    return SessionReport(
        index=index,
        session_id=f"s{index}",
        model_id="piper-en-joe-medium",
        workers=workers,
        sample_rate=48000,
        frames=50,
        first_audio_ms=first_ms,
        wall_s=1.5,
        pcm=b"\x00\x00" * 48000,
    )


def test_defaults_match_the_guide_host_and_the_protocol_defaults() -> None:
    """No arguments: ws://localhost:8080, English, 48 kHz, one session, no WAV file."""
    options = parse_args([])
    assert options == CliOptions()
    assert options.host == "ws://localhost:8080"
    assert (options.language, options.sample_rate, options.concurrency) == ("en", 48000, 1)
    assert options.text == DEFAULT_TEXT
    assert options.out is None


def test_every_option_is_parsed() -> None:
    """Each flag lands in its field with the right type."""
    options = parse_args(
        [
            "--host", "ws://127.0.0.1:9000", "--text", "Hi.", "--model", "tone-fast",
            "--language", "ja", "--sample-rate", "16000", "--concurrency", "6",
            "--out", "out/x.wav", "--word-by-word", "--word-interval-ms", "0", "--timeout", "3",
        ]
    )  # fmt: skip
    assert options == CliOptions(
        host="ws://127.0.0.1:9000",
        text="Hi.",
        model="tone-fast",
        language="ja",
        sample_rate=16000,
        concurrency=6,
        out=Path("out/x.wav"),
        word_by_word=True,
        word_interval_ms=0.0,
        timeout_s=3.0,
    )


def test_an_empty_model_means_the_routers_choice() -> None:
    """`make cli` passes no --model when MODEL is empty; an explicit empty one is None too."""
    assert parse_args(["--model", ""]).model is None


@pytest.mark.parametrize(
    "argv",
    [["--concurrency", "0"], ["--timeout", "0"], ["--text", "   "], ["--sample-rate", "x"]],
)
def test_bad_values_exit_with_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Bad arguments are a usage error (status 2) with a message, never a traceback."""
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """--help documents each option and the exit statuses."""
    with pytest.raises(SystemExit) as exc:
        parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--host", "--text", "--model", "--language", "--sample-rate", "--concurrency",
                 "--out", "--word-by-word", "--timeout"):  # fmt: skip
        assert flag in text
    assert "exit status" in text


def test_one_session_writes_the_named_file_and_many_get_an_index_suffix() -> None:
    """`--out a.wav`: a.wav alone; with concurrency 3: a-1.wav, a-2.wav, a-3.wav."""
    out = Path("out/cli.wav")
    assert output_path(out, 1, 1) == out
    assert [output_path(out, i, 3) for i in (1, 2, 3)] == [
        Path("out/cli-1.wav"),
        Path("out/cli-2.wav"),
        Path("out/cli-3.wav"),
    ]


def test_word_chunks_join_back_to_the_text() -> None:
    """Word-by-word chunks keep their whitespace, so the server sees exactly the text."""
    text = "  Hello there,  friend.\nThe meeting starts at nine. "
    chunks = split_words(text)
    assert "".join(chunks) == text
    assert len(chunks) == 8
    assert split_words("こんにちは") == ["こんにちは"]


def test_report_line_names_the_worker_latency_and_real_time_factor() -> None:
    """One line per session: id, worker (with failover), first audio, audio/wall s and RTF."""
    report = _report(2, ("tts-piper@0", "tts-piper@1"), first_ms=123.4)
    assert report.audio_s == pytest.approx(1.0)
    assert report.rtf == pytest.approx(1.5)
    line = format_report(report)
    assert "session 2: id=s2" in line
    assert "worker=tts-piper@0 -> tts-piper@1" in line
    assert "first_audio=123 ms" in line
    assert "audio=1.00 s" in line and "wall=1.50 s" in line and "rtf=1.50" in line


def test_distribution_counts_sessions_per_first_worker() -> None:
    """The load-distribution summary counts each session once, on the worker it was routed to."""
    reports = [
        _report(1, ("tts-piper@0",), 100.0),
        _report(2, ("tts-piper@1",), 200.0),
        _report(3, ("tts-piper@0", "tts-piper@1"), 300.0),
    ]
    lines = format_distribution(reports)
    assert lines[0] == "sessions per worker (3 sessions):"
    assert lines[1:3] == ["  tts-piper@0: 2", "  tts-piper@1: 1"]
    assert lines[3] == "first audio: min 100 ms, median 200 ms, max 300 ms"
