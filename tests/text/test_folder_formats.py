"""Converted folders in the portable format: every supported transformers reads them alike, and a
folder read with different numbers is refused (polysteer.data.formats, text models' loading).

These tests also run in the lowest-versions environment of .ci/lower-bounds (transformers 4.46), so
the folder written there by the running version is checked through that version's own reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polysteer.data import (
    FOLDER_FORMAT,
    FolderFormatError,
    check_readback,
    make_portable,
    readback,
    write_model_manifest,
)
from polysteer.data.formats import portable_config, portable_tokenizer_config, rope_settings
from polysteer.plugins.text import models
from polysteer.plugins.text.models import MANIFEST, load_causal_lm

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(autouse=True)
def offline_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("POLYSTEER_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


# --- the rewrite itself (plain dicts) -----------------------------------------------------------


def test_rope_parameters_become_the_keys_every_version_reads() -> None:
    out = portable_config({"model_type": "llama", "dtype": "float32",
                           "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}})
    assert "rope_parameters" not in out
    assert out["rope_theta"] == 100000.0 and out["rope_scaling"] is None
    assert out["torch_dtype"] == out["dtype"] == "float32"


def test_a_scaled_rope_keeps_its_scaling_under_both_spellings() -> None:
    scaling = {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    out = portable_config({"rope_parameters": scaling})
    assert out["rope_theta"] == 500000.0
    assert out["rope_scaling"] == {"rope_type": "llama3", "type": "llama3", "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8192}


def test_per_layer_rope_parameters_are_refused() -> None:
    with pytest.raises(FolderFormatError, match="per-layer"):
        portable_config({"rope_parameters": {"full_attention": {"rope_theta": 1.0},
                                             "sliding_attention": {"rope_theta": 2.0}}})


def test_a_config_already_portable_is_unchanged() -> None:
    config = {"model_type": "llama", "rope_theta": 10000.0, "rope_scaling": None}
    assert portable_config(config) == config


def test_the_tokenizer_class_is_one_every_version_knows() -> None:
    out = portable_tokenizer_config(
        {"tokenizer_class": "TokenizersBackend", "backend": "tokenizers", "is_local": True,
         "local_files_only": True, "eos_token": "</s>"}, chat_template="{{ messages }}")
    assert out == {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>",
                   "chat_template": "{{ messages }}"}
    named = portable_tokenizer_config({"tokenizer_class": "GPT2Tokenizer"}, None)
    assert named == {"tokenizer_class": "GPT2Tokenizer"}


# --- a real folder written by the running transformers --------------------------------------


def _tiny(folder: Path, rope_theta: float = 12345.0) -> Path:
    """A tiny random Llama with a non-default rope_theta and a BPE-free word tokenizer."""
    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(97)]
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100, bos_token_id=1, eos_token_id=2,
        rope_theta=rope_theta)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _convert_tiny(folder: Path, name: str = "tiny") -> Path:
    """What an install does: save, make portable, read back, write the manifest last."""
    _tiny(folder)
    make_portable(folder)
    read = readback(transformers.AutoConfig.from_pretrained(folder),
                    transformers.AutoTokenizer.from_pretrained(folder))
    write_model_manifest(folder, name=name, title=name, licence="MIT", source={},
                         libraries=("transformers",), readback=read)
    return folder


def test_the_written_folder_holds_rope_and_tokenizer_in_portable_keys(tmp_path: Path) -> None:
    folder = _convert_tiny(tmp_path / "tiny")
    config = json.loads((folder / "config.json").read_text())
    assert config["rope_theta"] == 12345.0 and "rope_parameters" not in config
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "for m in messages" in tokenizer_config["chat_template"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["folder_format"] == FOLDER_FORMAT
    assert manifest["converted_with"]["transformers"] == transformers.__version__
    assert manifest["converted_with"]["torch"] == torch.__version__
    assert manifest["readback"]["config"]["rope"] == {"rope_theta": 12345.0, "rope_type": "default"}


def test_the_running_version_reads_the_rope_that_was_written(tmp_path: Path) -> None:
    folder = _convert_tiny(tmp_path / "tiny")
    model, tokenizer = load_causal_lm(folder)
    assert rope_settings(model.config) == {"rope_theta": 12345.0, "rope_type": "default"}
    assert type(tokenizer).__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend")
    assert tokenizer.apply_chat_template([{"role": "user", "content": "w5"}], tokenize=False) == "w5 "


def test_a_folder_read_with_another_rope_is_refused(tmp_path: Path) -> None:
    folder = _convert_tiny(tmp_path / "tiny")
    config = json.loads((folder / "config.json").read_text())
    config["rope_theta"] = 10000.0  # what 4.x read from a 5.x folder: its own default
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FolderFormatError) as err:
        load_causal_lm(folder)
    message = str(err.value)
    assert ("config.rope was {'rope_theta': 12345.0, 'rope_type': 'default'} when written, reads as "
            "{'rope_theta': 10000.0, 'rope_type': 'default'}") in message
    assert f"written by transformers {transformers.__version__}" in message
    assert "convert" in message and "refused" in message


def test_a_folder_whose_tokenizer_reads_differently_is_refused(tmp_path: Path) -> None:
    folder = _convert_tiny(tmp_path / "tiny")
    data = json.loads((folder / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["<unk>"], vocab["w9"] = vocab["w9"], vocab["<unk>"]  # the probe's words are all unknown
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(FolderFormatError, match="probe_ids"):
        load_causal_lm(folder)


def test_a_folder_in_the_old_format_is_refused_with_the_fix(tmp_path: Path) -> None:
    folder = _tiny(tmp_path / "old")
    write_model_manifest(folder, name="smollm2", title="old", licence="MIT", source={},
                         libraries=("transformers",))  # no read-back: folder format 1
    with pytest.raises(FolderFormatError) as err:
        load_causal_lm(folder)
    assert "folder format 1" in str(err.value)
    assert "install_model('smollm2', force=True)" in str(err.value)


def test_a_folder_without_a_manifest_loads_as_any_hugging_face_folder(tmp_path: Path) -> None:
    model, _ = load_causal_lm(_tiny(tmp_path / "plain"))
    assert model.config.num_hidden_layers == 2


def test_check_readback_names_each_difference() -> None:
    manifest = {"folder_format": FOLDER_FORMAT, "converted_with": {"transformers": "9.9"},
                "readback": {"config": {"hidden_size": 32, "rope": {"rope_theta": 1.0}}}}
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=64, num_attention_heads=4,
                                      rope_theta=1.0)
    with pytest.raises(FolderFormatError, match="config.hidden_size was 32 when written, reads as 64"):
        check_readback(manifest, name="x", folder="f", fix="fix it", config=config)


# --- the embedded model's cached folder: an old format is converted again ----------------------


def test_an_embedded_folder_in_the_old_format_is_converted_again(
    tmp_path: Path, offline_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "fake.gguf"
    weights.write_bytes(b"GGUF")
    calls: list[Path] = []

    def convert(source: Path, out: Path, progress: bool) -> dict:
        calls.append(out)
        (out / "config.json").write_text('{"model_type": "llama"}')
        return {"config": {"model_type": "llama"}}

    old = offline_home / "models" / "smollm2"
    old.mkdir(parents=True)
    (old / "config.json").write_text('{"model_type": "llama", "rope_parameters": {}}')
    write_model_manifest(old, name="smollm2", title="old", licence="MIT", source={},
                         libraries=("transformers",))
    monkeypatch.setattr(models, "locate_weights", lambda name: weights)
    monkeypatch.setattr(models, "_require", lambda *args: None)
    monkeypatch.setattr(models, "_convert", convert)
    folder = models._embedded_folder("smollm2")
    assert len(calls) == 1
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["folder_format"] == FOLDER_FORMAT
    models._embedded_folder("smollm2")
    assert len(calls) == 1  # the upgraded folder is kept
