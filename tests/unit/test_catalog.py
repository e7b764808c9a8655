"""The model catalog: lookups, errors that name the known ids, the built-in models."""

from __future__ import annotations

from pathlib import Path

import pytest
from duplex.worker.adapters.base import adapter_families
from duplex.worker.catalog import (
    Catalog,
    LocalPiperVoice,
    ModelDir,
    ModelSpec,
    UnknownModel,
    builtin_catalog,
)


def _spec(model_id: str, family: str = "tone", languages: tuple[str, ...] = ("en",)) -> ModelSpec:
    return ModelSpec(
        model_id=model_id,
        family=family,
        languages=languages,
        capabilities=("streaming",),
        native_sample_rate=24000,
        description="test",
        params={"rtf": "0"},
    )


def test_get_returns_the_spec_by_id() -> None:
    """get() finds a spec by its model id."""
    catalog = Catalog([_spec("a"), _spec("b")])
    assert catalog.get("b").model_id == "b"


def test_unknown_model_names_every_known_id() -> None:
    """An unknown id raises UnknownModel whose message and fields name the known ids."""
    catalog = Catalog([_spec("a"), _spec("b")])
    with pytest.raises(UnknownModel) as info:
        catalog.get("zzz")
    assert info.value.model_id == "zzz"
    assert info.value.known == ("a", "b")
    assert "'zzz'" in str(info.value) and "a, b" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_duplicate_ids_are_rejected() -> None:
    """Two specs with one id make an invalid catalog."""
    with pytest.raises(ValueError, match="duplicate"):
        Catalog([_spec("a"), _spec("a")])


def test_languages_are_the_sorted_union() -> None:
    """languages() merges every model's languages without repeats."""
    catalog = Catalog([_spec("a", languages=("ja", "en")), _spec("b", languages=("en", "de"))])
    assert catalog.languages() == ("de", "en", "ja")


def test_for_family_filters_by_adapter() -> None:
    """for_family() lists the specs one adapter serves, in catalog order."""
    catalog = Catalog([_spec("a", "piper"), _spec("b", "tone"), _spec("c", "piper")])
    assert [s.model_id for s in catalog.for_family("piper")] == ["a", "c"]


def test_spec_is_frozen_and_hashable() -> None:
    """A spec cannot be changed, its params are read-only and it can be a dict key."""
    spec = _spec("a")
    with pytest.raises(AttributeError):
        spec.model_id = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.params["rtf"] = "1"  # type: ignore[index]
    assert {spec: 1}[spec] == 1
    assert spec == _spec("a")


def test_builtin_catalog_has_the_documented_models() -> None:
    """The built-in ids, families, languages and rates are the ones the issue lists."""
    catalog = builtin_catalog()
    assert catalog.ids() == (
        "piper-en-joe-medium",
        "kokoro-ja-jf_alpha",
        "kokoro-ja-jf_gongitsune",
        "kokoro-ja-jf_nezumi",
        "kokoro-ja-jf_tebukuro",
        "kokoro-ja-jm_kumo",
        "tone-fast",
        "tone-rt02",
        "xtts-v2-en-demo",
        "cosyvoice2-en-base",
    )
    piper = catalog.get("piper-en-joe-medium")
    assert (piper.family, piper.languages, piper.native_sample_rate) == ("piper", ("en",), 22050)
    kokoro = catalog.get("kokoro-ja-jm_kumo")
    assert (kokoro.family, kokoro.languages, kokoro.native_sample_rate) == (
        "kokoro",
        ("ja",),
        24000,
    )
    assert kokoro.params["voice"] == "jm_kumo"
    assert float(catalog.get("tone-fast").params["rtf"]) == 0.0
    assert float(catalog.get("tone-rt02").params["rtf"]) == pytest.approx(0.2)
    # The load-test tone speaks at the clients' default 48 kHz: no resampling per session.
    assert catalog.get("tone-fast").native_sample_rate == 48000
    assert catalog.get("tone-rt02").native_sample_rate == 24000
    assert all("streaming" in s.capabilities for s in catalog.all())
    assert catalog.languages() == ("en", "ja")


def test_builtin_piper_files_exist() -> None:
    """The bundled Piper voice's model and config files are where the catalog points."""
    piper = builtin_catalog().get("piper-en-joe-medium")
    assert Path(piper.params["model_path"]).is_file()
    assert Path(piper.params["config_path"]).is_file()


def test_every_builtin_family_has_an_adapter() -> None:
    """Each catalog entry's family is registered in adapter_for."""
    assert {s.family for s in builtin_catalog().all()} <= set(adapter_families())


def test_own_piper_voices_join_the_catalog_as_piper_models() -> None:
    """model_manager.voices entries become piper specs with their files, languages and rate."""
    voice = LocalPiperVoice(
        model_id="piper-de-thorsten",
        model_path="/models/de_DE-thorsten-medium.onnx",
        languages=("de",),
        sample_rate=22050,
    )
    spec = builtin_catalog(voices=[voice], environ={}).get("piper-de-thorsten")
    assert (spec.family, spec.languages, spec.native_sample_rate) == ("piper", ("de",), 22050)
    assert spec.params["model_path"] == "/models/de_DE-thorsten-medium.onnx"
    assert spec.params["config_path"] == ""  # the adapter then reads model_path + ".json"


def test_gpu_model_dirs_come_from_config_else_environment() -> None:
    """model_dirs wins over XTTS_MODEL_DIR; unset leaves it empty; zero_shot at 24 kHz."""
    env = {"XTTS_MODEL_DIR": "/env/xtts"}
    catalog = builtin_catalog(model_dirs=[ModelDir("xtts-v2-en-demo", "/cfg/xtts")], environ=env)
    assert catalog.get("xtts-v2-en-demo").params["model_dir"] == "/cfg/xtts"
    assert builtin_catalog(environ=env).get("xtts-v2-en-demo").params["model_dir"] == "/env/xtts"
    assert builtin_catalog(environ={}).get("xtts-v2-en-demo").params["model_dir"] == ""
    spec = catalog.get("xtts-v2-en-demo")
    assert "zero_shot" in spec.capabilities and spec.native_sample_rate == 24000
    cosy = builtin_catalog(environ={"COSYVOICE_MODEL_DIR": "/env/cosy"}).get("cosyvoice2-en-base")
    assert (cosy.family, cosy.params["model_dir"]) == ("cosyvoice2", "/env/cosy")
    assert "zero_shot" in cosy.capabilities and cosy.native_sample_rate == 24000


def test_model_dirs_for_an_unknown_model_are_refused() -> None:
    """A typo in model_dirs is an error naming the models that take a directory."""
    with pytest.raises(ValueError, match=r"unknown model 'xtts-v3'.*xtts-v2-en-demo"):
        builtin_catalog(model_dirs=[ModelDir("xtts-v3", "/x")], environ={})
