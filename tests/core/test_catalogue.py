"""The artifact catalogue: registration, install/verify, and ``polysteer models`` over every plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import polysteer as ps
from polysteer.cli import main
from polysteer.data.catalogue import Artifact, artifact, artifacts, catalogue, plugin_of
from polysteer.data.manifest import write_model_manifest
from polysteer.errors import RegistryError


def _install_toy(folder: Path, force: bool, progress: bool) -> Path:
    if (folder / "polysteer-model.json").is_file() and not force:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(b"\x00" * 64)
    write_model_manifest(folder, name="toy", title="Toy", licence="CC0-1.0",
                         source={"package": "toy-weights==1.0"})
    return folder


class ArtifactPlugin:
    def __init__(self, folder: Path):
        self.folder = folder

    @ps.hookimpl
    def polysteer_register_artifacts(self, registry):
        registry.register("toy", Artifact(
            name="toy", kind="model", modality="video", description="a toy model", licence="CC0-1.0",
            size="64 B", package="toy-weights==1.0", locate=lambda: self.folder,
            installer=lambda force, progress: _install_toy(self.folder, force, progress)))


@pytest.fixture
def toy(plugin_manager, register_plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))  # nothing of the real cache is read
    register_plugin(ArtifactPlugin(tmp_path / "toy"), "toy-plugin")
    return artifact("toy")


def test_a_plugin_registers_an_artifact_and_it_installs_and_verifies(toy, tmp_path):
    assert plugin_of("toy") == "toy-plugin" and "toy" in artifacts()
    assert not toy.is_installed()
    assert toy.verify()[0].startswith("toy is not installed")
    assert toy.install() == tmp_path / "toy" and toy.is_installed()
    assert toy.verify() == []
    (tmp_path / "toy" / "weights.bin").write_bytes(b"\x01" * 64)  # same size, other content
    (problem,) = toy.verify()
    assert "weights.bin does not match its sha256" in problem
    (row,) = [r for r in catalogue(rehash=True) if r["name"] == "toy"]
    assert row["installed"] and row["verified"] is False and row["plugin"] == "toy-plugin"


def test_models_lists_every_kind_from_every_plugin(toy, capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"smollm2", "avatars", "joe", "whisper-tiny-en", "sms-spam", "toy"} <= set(rows)
    assert [rows[n]["kind"] for n in ("smollm2", "avatars", "joe", "whisper-tiny-en", "sms-spam")] == [
        "model", "model", "voice", "asr", "dataset"]
    assert {rows[n]["plugin"] for n in ("smollm2", "avatars", "joe", "sms-spam")} == {
        "text", "image", "voice", "core"}
    for row in rows.values():
        assert row["licence"] and row["size"] and row["package"] and row["description"]
    assert rows["sms-spam"]["installed"] is False and rows["toy"]["verified"] is None
    assert main(["models", "--kind", "asr"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "kind"] and [line.split()[0] for line in lines[1:]] == [
        "whisper-tiny-en"]


def test_models_install_and_verify_by_name(toy, tmp_path, capsys):
    assert main(["models", "verify", "toy"]) == 1  # not installed yet
    assert "not installed" in capsys.readouterr().err
    assert main(["models", "install", "toy"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "toy")
    assert main(["models", "verify", "toy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    (tmp_path / "toy" / "weights.bin").unlink()
    assert main(["models", "verify", "toy"]) == 1
    assert "weights.bin is missing" in capsys.readouterr().err


def test_the_shipped_image_model_verifies_without_installing(plugin_manager, capsys):
    assert main(["models", "verify", "avatars"]) == 0
    assert "avatars: intact" in capsys.readouterr().out
    assert artifact("avatars").install() == artifact("avatars").folder()


def test_unknown_names_get_a_did_you_mean_and_exit_2(toy, capsys):
    with pytest.raises(RegistryError, match="Did you mean 'smollm2'"):
        artifact("smolm2")
    assert main(["models", "install", "whisper-tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean 'whisper-tiny-en'" in err
    assert main(["models", "verify"]) == 2
    assert "needs a NAME" in capsys.readouterr().err


def test_artifact_kinds_are_checked():
    with pytest.raises(ValueError, match="kind 'weights'"):
        Artifact("x", "weights", "text", "", "", "", "", locate=Path, installer=lambda f, p: Path())


def test_models_verify_takes_a_local_folder_polysteer_converted(toy, tmp_path, capsys):
    folder = toy.install()
    copy = tmp_path / "my-copy"
    copy.mkdir()
    for item in folder.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    assert main(["models", "verify", str(copy)]) == 0
    assert f"{copy}: intact" in capsys.readouterr().out
    (copy / "weights.bin").write_bytes(b"\x01" * 64)  # same size, other bytes
    assert main(["models", "verify", str(copy), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verified"] is False
    plain = tmp_path / "not-converted"
    plain.mkdir()
    assert main(["models", "verify", str(plain)]) == 2
    assert "has no polysteer-model.json" in capsys.readouterr().err
