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
