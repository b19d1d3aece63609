"""Concepts from examples, inspect, and the text CLI commands, on tiny random models."""

import pytest
import torch

import polysteer as ps
from polysteer.cli import main
from polysteer.errors import ConfigError
from polysteer.plugins.text import commands
from polysteer.plugins.text.concepts import ConceptSpec, build_concept, token_activations
from polysteer.plugins.text.inspect import inspect_text
from polysteer.plugins.text.testing import tiny_text_adapter

pytest.importorskip("transformers")

SPEC = """
name: happy
site: blocks.1.resid_post
method: {method}
intensity: 0.4
positive: ["the cat is happy", "a good day", "very happy friend"]
negative: ["the cat is sad", "a bad day", "very sad friend"]
"""


@pytest.fixture
def adapter(plugin_manager):
    return tiny_text_adapter("llama")


def write_spec(tmp_path, method="mean-diff", text=SPEC):
    path = tmp_path / "happy.yaml"
    path.write_text(text.format(method=method))
    return path


def test_token_activations_drop_padding_and_the_first_token(adapter):
    acts = token_activations(adapter, ["the cat", "the cat sat on the mat"], "blocks.0.resid_post")
    assert [a.shape for a in acts] == [(1, 32), (5, 32)]
    alone = token_activations(adapter, ["the cat"], "blocks.0.resid_post")[0]
    assert torch.allclose(alone, acts[0], atol=1e-5), "left padding must not change a text's activations"


@pytest.mark.parametrize("method", ["mean-diff", "pca"])
def test_build_concept_points_from_negative_to_positive(adapter, tmp_path, method):
    spec = ConceptSpec.load(write_spec(tmp_path, method))
    concept = build_concept(adapter, spec)
    assert concept.info.site == "blocks.1.resid_post" and concept.labels == ["happy"]
    assert concept.info.details["recommended_intensity"] == 0.4
    pos, neg = spec.texts()
    read = [torch.cat(token_activations(adapter, t, spec.site)).mean(0) @ concept.directions[0]
            for t in (pos, neg)]
    assert read[0] > read[1]
    concept.save(tmp_path / "d")
    ps.load_dictionary(tmp_path / "d").check_compatible(adapter.model_fingerprint, spec.site, 32)


def test_concept_spec_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        ConceptSpec.load(write_spec(tmp_path, text=SPEC + "colour: red\n"))
    with pytest.raises(ConfigError, match="method"):
        ConceptSpec.load(write_spec(tmp_path, method="magic"))


def test_inspect_is_deterministic_and_labelled(adapter, tmp_path):
    concept = build_concept(adapter, ConceptSpec.load(write_spec(tmp_path)))
    first = inspect_text(adapter, concept, "the cat is happy")
    assert [r["token"] for r in first] == ["the", "cat", "is", "happy"]
    assert all(r["features"][0][0] == "happy" for r in first)
    assert first == inspect_text(adapter, concept, "the cat is happy")


def test_inspect_refuses_a_dictionary_from_another_model(adapter, tmp_path):
    concept = build_concept(adapter, ConceptSpec.load(write_spec(tmp_path)))
    other = tiny_text_adapter("llama", seed=1)
    with pytest.raises(ps.DictionaryMismatchError, match="rebuild"):
        inspect_text(other, concept, "the cat")


def test_side_by_side_columns():
    text = commands.side_by_side(("plain", "one two three"), ("steered", "four five"), width=40)
    lines = text.splitlines()
    assert lines[0].startswith("plain") and "| steered" in lines[0]
    assert "one two three" in lines[2] and "four five" in lines[2]


def test_steer_command_compare_and_stream(adapter, monkeypatch, capsys, tmp_path):
    concept = build_concept(adapter, ConceptSpec.load(write_spec(tmp_path)))
    concept.save(tmp_path / "happy-dict")
    style = tmp_path / "style.yaml"
    style.write_text("name: happy\ncomponents:\n  - dictionary: happy-dict\n    feature: happy\n")
    adapter.model.save_pretrained(tmp_path / "tiny")
    adapter.tokenizer.save_pretrained(tmp_path / "tiny")  # no chat template: plain prompts
    monkeypatch.chdir(tmp_path)
    args = ["steer", "--model", str(tmp_path / "tiny"), "--style", str(style), "--intensity", "3",
            "--max-new-tokens", "4", "the cat"]
    assert main([*args, "--compare"]) == 0
    out = capsys.readouterr().out
    assert "unsteered" in out and "happy x 3" in out
    assert main(args) == 0
    assert capsys.readouterr().out.strip(), "streaming printed nothing"


def test_unknown_style_lists_shipped_styles():
    with pytest.raises(FileNotFoundError, match="reference-demo"):
        ps.load_style("no-such-style")
