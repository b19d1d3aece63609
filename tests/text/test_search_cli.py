"""``polysteer search`` on a tiny model: by label, by similarity, by contrasting example texts."""

from __future__ import annotations

import torch

from polysteer.cli import main
from polysteer.features.concepts import direction_set
from polysteer.plugins.text.testing import tiny_model, tiny_text_adapter, tiny_tokenizer

SITE = "blocks.1.resid_post"


def _setup(tmp_path):
    model_dir = tmp_path / "tiny"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    adapter = tiny_text_adapter()
    # feature "happy-ish": the mean activation of "happy" texts minus "sad" texts; "other": random
    from polysteer.plugins.text.classify import text_activations

    happy = torch.cat(text_activations(adapter, ["happy happy happy", "a happy day"], SITE))
    sad = torch.cat(text_activations(adapter, ["sad sad sad", "a sad day"], SITE))
    vectors = [happy.mean(0) - sad.mean(0), torch.randn(happy.shape[1]),
               (happy.mean(0) - sad.mean(0)) + 0.1 * torch.randn(happy.shape[1])]
    direction_set(vectors, ["happy words", "other", "happy twin"], site=SITE, site_norm=1.0,
                  model=adapter.model_fingerprint, method="test").save(tmp_path / "moods")
    return model_dir, tmp_path / "moods"


def test_search_by_label_similarity_and_examples(tmp_path, capsys, plugin_manager):
    model_dir, moods = _setup(tmp_path)
    assert main(["search", "--dictionary", str(moods), "happy", "--top", "2"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["0", "2"]
    assert main(["search", "--dictionary", str(moods), "--like", "happy words", "--top", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "2"
    (tmp_path / "pos.txt").write_text("the happy cat\nhappy happy day\n")
    assert main(["search", "--dictionary", str(moods), "--model", str(model_dir),
                 "--positive", str(tmp_path / "pos.txt"), "--positive", "a happy friend",
                 "--negative", "the sad cat", "--negative", "sad sad night", "--top", "3"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert rows and rows[0].split()[0] in {"0", "2"}


def test_search_needs_exactly_one_mode(tmp_path, capsys, plugin_manager):
    _, moods = _setup(tmp_path)
    assert main(["search", "--dictionary", str(moods)]) == 2
    assert "give exactly one of" in capsys.readouterr().err
    assert main(["search", "--dictionary", str(moods), "happy", "--like", "0"]) == 2
    assert main(["search", "--dictionary", str(moods), "--positive", "a happy cat"]) == 2
    assert "both sides" in capsys.readouterr().err


def test_search_texts_with_no_token_left_are_a_clean_error_not_a_traceback(tmp_path, capsys, monkeypatch,
                                                                         plugin_manager):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    model_dir, moods = _setup(tmp_path)
    from polysteer.features import load_dictionary

    tiny = load_dictionary(moods)
    tiny.info.site_norm = 1e-6  # every token reads as an attention sink: no text has a token left
    tiny.save(tmp_path / "sinks")
    assert main(["search", "--dictionary", str(tmp_path / "sinks"), "--model", str(model_dir),
                 "--positive", "Ok", "--negative", "no"]) == 2
    err = capsys.readouterr().err
    assert "left out 1 text(s)" in err and "error: no text is left" in err
    assert main(["search", "--dictionary", str(tmp_path / "sinks"), "--model", str(model_dir),
                 "--positive", "Ok", "--negative", "no"]) == 2
    err = capsys.readouterr().err
    assert "reusing 0 pooled texts" in err and "left out 1 text(s)" in err, "a cached side says it too"


def test_search_caches_pooled_texts(tmp_path, capsys, plugin_manager, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    model_dir, moods = _setup(tmp_path)
    argv = ["search", "--dictionary", str(moods), "--model", str(model_dir), "--positive",
            "the happy cat", "--positive", "happy happy day", "--negative", "the sad cat",
            "--negative", "sad sad night", "--top", "3"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "reusing" not in first.err and len(list((tmp_path / "home" / "search").iterdir())) == 2
    assert main(argv) == 0
    second = capsys.readouterr()
    assert "reusing 2 pooled texts" in second.err and second.out == first.out
    assert main([*argv, "--no-cache"]) == 0
    assert "reusing" not in capsys.readouterr().err
