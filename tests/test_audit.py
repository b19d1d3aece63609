"""The side-effect audit on tiny random models of every modality: a style that pushes one
feature of a dictionary shows that feature moving most; at intensity 0 nothing moves and the KL is
zero; the report prints, serialises and renders."""

from __future__ import annotations

import json

import pytest
import torch

import polysteer as ps
from polysteer.features.concepts import median_norm
from polysteer.features.dictionary import DictionaryInfo, SparseAutoencoder

FEATURE = 3


def _sae_and_style(adapter, site, inputs, **generate):
    """A tied ReLU SAE of 8 features at ``site`` and a style that adds its feature 3."""
    with ps.steer(adapter, None, capture=[site]) as run:
        adapter.generate(inputs, **generate)
    acts = run.captured(site)
    acts = acts.flatten(0, 1) if acts.ndim == 4 else acts
    torch.manual_seed(0)
    sae = SparseAutoencoder(acts.shape[-1], 8, DictionaryInfo(
        model=adapter.model_fingerprint, site=site, site_norm=median_norm(acts), method="test"),
        activation="relu", labels=[f"f{i}" for i in range(8)])
    style = ps.Style.from_dict({"name": "push-f3", "components": [
        {"dictionary": "in-memory", "feature": FEATURE}]})
    style.components[0].dictionary = sae
    return sae, style


def _check(report, intensity):
    assert report.features, report.table()
    if intensity == 0:
        assert all(f.change == 0 for f in report.features)
    else:
        assert report.features[0].feature == FEATURE, report.table()
        assert report.features[0].change > 0
        assert report.features[0].label == f"f{FEATURE}"
    data = json.loads(report.to_json())
    assert data["features"][0]["feature"] == report.features[0].feature
    page = report.to_html()
    assert "Side-effect audit" in page and "push-f3" in page


def test_text_audit_feature_and_kl():
    from polysteer.plugins.text.testing import tiny_text_adapter

    adapter = tiny_text_adapter()
    site = adapter.sites()[len(adapter.sites()) // 2]
    prompts = ["hello world", "the cat sat"]
    sae, style = _sae_and_style(adapter, site, prompts, max_new_tokens=4)
    zero = ps.audit(adapter, style, 0.0, probes=prompts, dictionary=sae, generate={"max_new_tokens": 5})
    _check(zero, 0)
    assert zero.kl is not None and len(zero.kl) == 5 and all(v == 0.0 for v in zero.kl)
    strong = ps.audit(adapter, style, 6.0, probes=prompts, dictionary=sae, generate={"max_new_tokens": 5})
    _check(strong, 6)
    assert strong.mean_kl > 0 and all(len(row) == 5 for row in strong.kl_per_probe)
    assert "KL(steered || unsteered)" in strong.table()


def test_image_audit_feature_moves_most():
    from polysteer.plugins.image.adapter import DiffusersAdapter
    from polysteer.plugins.image.testing import tiny_unet2d_pipeline

    adapter = DiffusersAdapter(tiny_unet2d_pipeline(), "tiny-unet2d")
    site = "mid"
    options = {"num_inference_steps": 3, "seed": 0}
    sae, style = _sae_and_style(adapter, site, 2, **options)
    report = ps.audit(adapter, style, 4.0, probes=2, dictionary=sae, generate=options, effects=False)
    _check(report, 4)
    assert report.kl is None


@pytest.mark.parametrize("effects", [True])
def test_voice_audit_feature_and_measures(effects):
    from polysteer.plugins.voice.testing import tiny_vits_adapter

    adapter = tiny_vits_adapter()
    probes = {"phonemes": ["həlˈoʊ wˈɜːld.", "ðɪs ɪz ɐ tˈɛst, ɪzənt ɪt?"]}
    sae, style = _sae_and_style(adapter, "decoder.input", probes)
    report = ps.audit(adapter, style, 8.0, probes=probes, dictionary=sae, effects=effects)
    _check(report, 8)
    names = {m.name for m in report.measures}
    assert {"pitch", "level", "rate"} <= names, names
    zero = ps.audit(adapter, style, 0.0, probes=probes, dictionary=sae, effects=effects)
    assert all(m.change == 0 for m in zero.measures if m.units), zero.table()


def test_experiment_report_shows_the_audit(tmp_path):
    from polysteer.config import compose
    from polysteer.workflows.experiment import run_experiment

    comp = compose(["experiment=reference-demo", "experiment.intensities=[0,1]",
                    "experiment.audit={intensity: 2.0, dictionary: null}"])
    folder = run_experiment(comp, output_dir=tmp_path)
    page = (folder / "report.html").read_text()
    assert "Side-effect audit: reference-demo x 2" in page
    data = json.loads((folder / "audit-reference-reference-demo.json").read_text())
    assert data["intensity"] == 2.0 and data["kl"] is None


def test_audit_command_prints_a_table_json_and_html(tmp_path, capsys):
    from polysteer.cli.main import main

    style = tmp_path / "s.yaml"
    style.write_text("name: s\ncomponents: []\n")
    assert main(["audit", str(style), "--model", "reference", "--dictionary", "none", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["style"] == "s" and data["modality"] == "text"
    html = tmp_path / "a.html"
    assert main(["audit", "reference-demo", "--model", "reference", "--dictionary", "none",
                 "--html", str(html)]) == 0
    assert "audit of 'reference-demo'" in capsys.readouterr().out and html.is_file()
    assert main(["audit", "no-such-style", "--model", "reference"]) == 2
