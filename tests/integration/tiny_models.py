"""Tiny, randomly initialised GPU-model directories, laid out as the real ones are.

No weights can be downloaded here, so the adapters' tests build model directories with the
real file layout and the real model code, only small and random: the adapters then load
them through exactly the production path. Random weights make noise, not speech; the
tests check streaming, rates, framing and conditioning, never intelligibility.

XTTS (:func:`build_tiny_xtts`), all real code: a BPE ``vocab.json`` trained here with
``tokenizers`` (with XTTS's special tokens), a ``config.json`` from coqui's own
``XttsConfig`` with a one-layer, 32-wide GPT, random weights saved as ``model.pth`` by the
real ``Xtts`` module, and a ``speakers_xtts.pth`` with one built-in speaker. The HiFi-GAN
decoder and the speaker encoder keep XTTS's fixed sizes (the config cannot shrink them),
so the checkpoint is about 90 MB. One change to the random weights: the GPT's stop token
gets a very low bias, so every clause runs to ``gpt_max_audio_tokens`` and yields a known
number of chunks instead of stopping at a random step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

XTTS_MAX_AUDIO_TOKENS = 12
XTTS_CHUNK_TOKENS = 4  # -> 3 chunks per clause
XTTS_SPEAKER = "Tiny Speaker"
_CORPUS = (
    "hello there friend the meeting starts at nine",
    "a quick brown fox jumps over the lazy dog",
    "abcdefghijklmnopqrstuvwxyz 0123456789 . , ! ? '",
)


def shared_tiny_xtts(base: Path) -> Path:
    """The run's one tiny XTTS directory under ``base`` (the session's base temp dir):
    built by the first test module that asks, reused by the others."""
    root = base / "tiny-xtts"
    if not (root / "speakers_xtts.pth").is_file():  # written last by build_tiny_xtts
        build_tiny_xtts(root)
    return root


def build_tiny_xtts(root: Path) -> Path:
    """Write a tiny XTTS model directory at ``root`` and return it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1234)
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=120, special_tokens=["[STOP]", "[UNK]", "[SPACE]", "[START]", "[en]"]
    )
    tokenizer.train_from_iterator(list(_CORPUS) * 10, trainer)
    tokenizer.save(str(root / "vocab.json"))

    config = XttsConfig()
    args: Any = config.model_args
    args.gpt_layers = 1
    args.gpt_n_model_channels = 32
    args.gpt_n_heads = 2
    args.gpt_num_audio_tokens = 34
    args.gpt_start_audio_token = 32
    args.gpt_stop_audio_token = 33
    args.gpt_max_audio_tokens = XTTS_MAX_AUDIO_TOKENS
    args.gpt_max_text_tokens = 100
    args.decoder_input_dim = 32
    args.gpt_use_perceiver_resampler = True  # as XTTS-v2
    config.languages = ["en"]
    (root / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")

    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(str(root / "vocab.json"))
    model.init_models()
    with torch.no_grad():
        model.gpt.mel_head.bias[args.gpt_stop_audio_token] = -1e4
    torch.save({"model": model.state_dict()}, root / "model.pth")
    speaker = {
        "gpt_cond_latent": torch.randn(1, 32, 32) * 0.1,
        "speaker_embedding": torch.randn(1, 512, 1) * 0.1,
    }
    torch.save({XTTS_SPEAKER: speaker}, root / "speakers_xtts.pth")
    return root


# -- CosyVoice2 ---------------------------------------------------------------------------
#
# Real code with random weights: the runtime's CosyVoice2Model (cosyvoice2-eu: its streaming
# loop with the 25-token hop and lookahead, the HiFT cache and fade between chunks, its
# per-generation threads and dictionaries, its checkpoint loading ``load``) and its HiFT
# vocoder (HiFTGenerator + ConvRNNF0Predictor, CosyVoice2's up-sampling 8x5x3 and iSTFT, 24
# kHz, only 16 channels wide). Injected (ours, small): the LLM (a module that yields a fixed
# number of speech tokens), the flow (a token-to-mel embedding with the flow's interface) and
# the frontend (text to byte tokens, reference audio to prompt tokens, features and an
# embedding from plain statistics): the real ones need the Qwen2 backbone, diffusers,
# conformer, lightning, openai-whisper and WeTextProcessing, and the ONNX speech tokenizer and
# campplus models, none of which fit here. The ONNX files and cosyvoice2.yaml are written as
# placeholders (the directory check needs them; the injected engine does not read them).

COSYVOICE_TOKENS = 70  # speech tokens per clause: chunks at 28 and 53 tokens, then the rest
COSYVOICE_SPEAKER = "Tiny Speaker"
_COSY_VOCAB = 64
_COSY_LOOKAHEAD = 3
_COSY_MEL_RATIO = 2


def _cosy_modules() -> tuple[Any, Any, Any]:
    import torch
    from cosyvoice.hifigan.f0_predictor import ConvRNNF0Predictor
    from cosyvoice.hifigan.generator import HiFTGenerator

    class TinyLLM(torch.nn.Module):  # type: ignore[misc]
        """Injected: yields COSYVOICE_TOKENS speech tokens (seeded by the embedding)."""

        def __init__(self) -> None:
            super().__init__()
            self.seed = torch.nn.Parameter(torch.randn(4))

        def inference(self, **kwargs: Any) -> Any:
            gen = torch.Generator().manual_seed(int(kwargs["text"].sum()) % 9973)
            for _ in range(COSYVOICE_TOKENS):
                yield int(torch.randint(0, _COSY_VOCAB, (1,), generator=gen))

    class TinyFlow(torch.nn.Module):  # type: ignore[misc]
        """Injected: the flow's interface (lookahead, mel ratio); tokens to 80-bin mels."""

        def __init__(self) -> None:
            super().__init__()
            self.input_frame_rate = 25
            self.pre_lookahead_len = _COSY_LOOKAHEAD
            self.token_mel_ratio = _COSY_MEL_RATIO
            self.embed = torch.nn.Embedding(_COSY_VOCAB, 80)

        def inference(self, token: Any, embedding: Any, finalize: bool, **_: Any) -> Any:
            kept = token if finalize else token[:, : token.shape[1] - self.pre_lookahead_len]
            mel = self.embed(kept.long()).transpose(1, 2) - 4.0
            return mel.repeat_interleave(self.token_mel_ratio, dim=2), None

    hift = HiFTGenerator(
        in_channels=80,
        base_channels=16,
        sampling_rate=24000,
        upsample_rates=[8, 5, 3],
        upsample_kernel_sizes=[16, 11, 7],
        istft_params={"n_fft": 16, "hop_len": 4},
        resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3,
        source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5]] * 3,
        f0_predictor=ConvRNNF0Predictor(num_class=1, in_channels=80, cond_channels=16),
    )
    return TinyLLM(), TinyFlow(), hift


class TinyCosyFrontend:
    """Injected frontend with the runtime frontend's methods the adapter calls."""

    def __init__(self, spk2info: dict[str, Any]) -> None:
        self.spk2info = spk2info
        self.conditioned = 0  # reference recordings turned into conditioning

    def text_normalize(self, text: str, split: bool = True, text_frontend: bool = True) -> Any:
        return [text] if split else text

    def _extract_text_token(self, text: str) -> tuple[Any, Any]:
        import torch

        tokens = torch.tensor([list(text.encode("utf-8"))], dtype=torch.int32)
        return tokens, torch.tensor([tokens.shape[1]], dtype=torch.int32)

    def frontend_cross_lingual(
        self, tts_text: str, prompt_speech_16k: Any, resample_rate: int, spk_id: str
    ) -> dict[str, Any]:
        import torch

        self.conditioned += 1
        frames = max(1, int(prompt_speech_16k.shape[1] / 16000 * 25))
        level = float(prompt_speech_16k.abs().mean())
        gen = torch.Generator().manual_seed(int(level * 1e6) % 9973)
        embedding = torch.randn(1, 192, generator=gen)
        tokens = torch.randint(0, _COSY_VOCAB, (1, frames), generator=gen, dtype=torch.int32)
        feat = torch.randn(1, frames * _COSY_MEL_RATIO, 80, generator=gen)
        text, text_len = self._extract_text_token(tts_text)
        return {
            "text": text,
            "text_len": text_len,
            "flow_prompt_speech_token": tokens,
            "flow_prompt_speech_token_len": torch.tensor([frames], dtype=torch.int32),
            "prompt_speech_feat": feat,
            "prompt_speech_feat_len": torch.tensor([feat.shape[1]], dtype=torch.int32),
            "llm_embedding": embedding,
            "flow_embedding": embedding,
        }


class TinyCosyEngine:
    """What ``CosyVoice2(model_dir)`` gives the adapter: rate, frontend, model."""

    def __init__(self, model: Any, frontend: TinyCosyFrontend) -> None:
        self.sample_rate = 24000
        self.model = model
        self.frontend = frontend


def build_tiny_cosyvoice2(root: Path) -> Path:
    """Write a tiny CosyVoice2 directory (random weights, real file names) at ``root``."""
    import torch

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(4321)
    llm, flow, hift = _cosy_modules()
    torch.save(llm.state_dict(), root / "llm.pt")
    torch.save(flow.state_dict(), root / "flow.pt")
    torch.save(hift.state_dict(), root / "hift.pt")
    speaker = {"embedding": torch.randn(1, 192)}
    torch.save({COSYVOICE_SPEAKER: speaker}, root / "spk2info.pt")
    (root / "cosyvoice2.yaml").write_text(
        "# tiny test model (tests/integration/tiny_models.py): loaded by an injected engine\n"
        "sample_rate: 24000\n",
        encoding="utf-8",
    )
    for name in ("campplus.onnx", "speech_tokenizer_v2.onnx"):
        (root / name).write_bytes(b"placeholder: the tiny engine's frontend is injected\n")
    return root


def load_tiny_cosyvoice2(root: Path, spec: object = None) -> TinyCosyEngine:
    """The engine factory for the adapter: the runtime's CosyVoice2Model over the tiny
    modules, its weights loaded by the runtime's own ``load`` from the directory."""
    import torch
    from cosyvoice.cli.model import CosyVoice2Model

    llm, flow, hift = _cosy_modules()
    model = CosyVoice2Model(llm, flow, hift, fp16=False)
    model.load(str(root / "llm.pt"), str(root / "flow.pt"), str(root / "hift.pt"))
    spk2info = torch.load(root / "spk2info.pt", map_location="cpu")
    return TinyCosyEngine(model, TinyCosyFrontend(spk2info))
