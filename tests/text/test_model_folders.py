"""Every command that takes a model name also takes a model folder (issue 19: ``sites`` refused a
folder that ``steer --model FOLDER`` accepted)."""

from __future__ import annotations

import torch

from polysteer.cli import main
from polysteer.features import direction_set
from polysteer.plugins.text.testing import tiny_model, tiny_text_adapter, tiny_tokenizer

SITE = "blocks.1.resid_post"


def test_model_folders_work_in_every_text_command(tmp_path, capsys, monkeypatch, plugin_manager):
    folder = tmp_path / "my-model"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    adapter = tiny_text_adapter()
    direction_set([torch.ones(adapter.bind(SITE).channels)], ["up"], site=SITE, site_norm=1.0,
                  model=adapter.model_fingerprint, method="test").save(tmp_path / "up")
    monkeypatch.chdir(tmp_path)
    for name in (str(folder), "my-model", "./my-model"):
        assert main(["sites", name]) == 0, name
        assert SITE in capsys.readouterr().out
    (tmp_path / "s.yaml").write_text("name: s\ncomponents:\n  - {dictionary: up, feature: up, weight: 1.0}\n")
    assert main(["steer", "--model", "my-model", "--style", "s.yaml", "--max-new-tokens", "2", "hello"]) == 0
    assert main(["generate", "--model", "./my-model", "--max-new-tokens", "2", "hello"]) == 0
    assert main(["inspect", "--model", "my-model", "--dictionary", str(tmp_path / "up"), "hi"]) == 0
    capsys.readouterr()
    assert main(["sites", "./no-such-model"]) == 2
    assert "no model folder or file" in capsys.readouterr().err
