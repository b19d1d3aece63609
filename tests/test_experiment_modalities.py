"""``polysteer run`` across modalities: styles x intensities x prompts x seeds x models.

Tiny random text, avatar and voice models (registered as throwaway adapter kinds) and a
cross-modal style whose realisations are random directions saved as dictionary folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import polysteer
from polysteer.config import compose, node_to_dict
from polysteer.features.concepts import direction_set
from polysteer.workflows.experiment import run_experiment

SITES = {"text": "blocks.1.resid_post", "image": "up.1", "voice": "text_encoder.project"}


def _text():
    from polysteer.plugins.text.testing import tiny_text_adapter

    return tiny_text_adapter()


def _image():
    from polysteer.plugins.image.adapter import DiffusersAdapter
    from polysteer.plugins.image.testing import tiny_avatar_pipeline

    return DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar")


def _voice():
    from polysteer.plugins.voice.testing import tiny_vits_adapter

    return tiny_vits_adapter()


FACTORIES = {"tiny-text": _text, "tiny-avatar": _image, "tiny-vits": _voice}


class TinyModels:
    @polysteer.hookimpl
    def polysteer_register_adapters(self, registry):
        for kind, factory in FACTORIES.items():
            registry.register(kind, lambda node, factory=factory: factory())


@pytest.fixture
def configs(tmp_path, register_plugin) -> Path:
    """A configs root with a tiny cross-modal style and an experiment over the three models."""
    register_plugin(TinyModels(), "tiny-models")
    root = tmp_path / "configs"
    (root / "style").mkdir(parents=True)
    (root / "experiment").mkdir()
    g = torch.Generator().manual_seed(3)
    realisations = {}
    for modality, factory in zip(("text", "image", "voice"), FACTORIES.values(), strict=True):
        adapter = factory()
        site = SITES[modality]
        ds = direction_set([torch.randn(adapter.bind(site).channels, generator=g)], ["up"], site=site,
                           site_norm=4.0, model=adapter.model_fingerprint, method="random (test)")
        folder = ds.save(tmp_path / "dictionaries" / f"tiny-{modality}")
        realisations[modality] = {"dictionary": str(folder), "feature": "up", "weight": 1.0}
    (root / "style" / "tiny-cheerful.yaml").write_text(yaml.safe_dump({
        "name": "tiny-cheerful", "concepts": {"cheerful": realisations},
        "components": [{"concept": "cheerful"}]}))
    (root / "style" / "tiny-text-only.yaml").write_text(yaml.safe_dump({
        "name": "tiny-text-only", "concepts": {"wordy": {"text": realisations["text"]}},
        "components": [{"concept": "wordy", "weight": 2.0}]}))
    (root / "experiment" / "across.yaml").write_text(yaml.safe_dump({"experiment": {
        "models": [{"model": {"kind": "tiny-text"}, "name": "text", "generate": {"max_new_tokens": 6}},
                   {"model": {"kind": "tiny-avatar"}, "name": "image"},
                   {"model": {"kind": "tiny-vits"}, "name": "voice"}],
        "styles": ["tiny-cheerful", "tiny-text-only"],
        "intensities": [0.0, 4.0],
        "prompts": ["the cat sat on the mat", "a red ship on the sea"],
        "seeds": [0, 1],
        "generate": {"image": {"num_inference_steps": 2}},
        "measures": {"text": ["changed_fraction"], "image": ["image_distance", "image_brightness"],
                     "voice": ["mean_abs_difference", "voice_loudness"]},
    }}))
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".txt", ".png", ".wav", ".jsonl") and "plots" not in p.parts}


def test_sweep_across_modalities_writes_outputs_metrics_plots_and_one_report(configs, tmp_path):
    comp = compose(["experiment=across"], root=configs)
    folder = run_experiment(comp, output_dir=tmp_path / "runs")
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    # 3 models x 2 prompts x 2 seeds x 2 styles x 2 intensities
    assert len(rows) == 48
    assert {r["model"] for r in rows} == {"text", "image", "voice"}
    assert {r["modality"] for r in rows} == {"text", "image", "voice"}
    assert {(r["style"], r["prompt"], r["seed"], r["intensity"]) for r in rows if r["model"] == "image"} == {
        (s, p, seed, i) for s in ("tiny-cheerful", "tiny-text-only") for p in (0, 1) for seed in (0, 1)
        for i in (0.0, 4.0)}
    suffixes = {"text": ".txt", "image": ".png", "voice": ".wav"}
    for r in rows:
        assert r["outputs"] and all(o.endswith(suffixes[r["model"]]) for o in r["outputs"])
        assert all((folder / o).is_file() for o in r["outputs"] + r["unsteered"])
    measure = {"text": "changed_fraction", "image": "image_distance", "voice": "mean_abs_difference"}
    for r in rows:
        value = r[measure[r["model"]]]
        if r["intensity"] == 0.0 or (r["style"] == "tiny-text-only" and r["model"] != "text"):
            assert value == 0.0, r  # intensity 0, or a style with nothing for this modality
        else:
            assert value > 0.0, r
    # a style without a realisation for a model says so in its rows
    for r in rows:
        if r["style"] == "tiny-text-only" and r["model"] != "text":
            assert r["not_applied"] and f"no {r['modality']} realisation" in r["not_applied"][0]
        else:
            assert r["not_applied"] == []
    for model in ("text", "image", "voice"):
        assert (folder / "plots" / f"measures-{model}.png").is_file()
    page = (folder / "report.html").read_text()
    assert page.count("<h2>") >= 3 and "<audio" in page and "<img" in page and "<pre>" in page
    assert "measures-voice.png" in page


def test_a_rerun_with_the_same_config_gives_identical_results(configs, tmp_path):
    overrides = ["experiment=across", "experiment.seeds=[2]", "experiment.styles=[tiny-cheerful]"]
    first = run_experiment(compose(overrides, root=configs), output_dir=tmp_path / "a")
    again = run_experiment(compose(overrides, root=configs), output_dir=tmp_path / "b")
    a, b = _files(first), _files(again)
    assert a == b and len(a) > 10
    other = run_experiment(compose(["experiment=across", "experiment.seeds=[3]",
                                    "experiment.styles=[tiny-cheerful]"], root=configs),
                           output_dir=tmp_path / "c")
    assert _files(other)["metrics.jsonl"] != a["metrics.jsonl"]


def test_unknown_measure_or_model_fails_before_generating(configs, tmp_path):
    with pytest.raises(polysteer.PolysteerError, match="no_such_measure"):
        run_experiment(compose(["experiment=across", "experiment.measures.text=[no_such_measure]"],
                               root=configs), output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(polysteer.ConfigError, match="experiment.models\\[0\\].colour"):
        run_experiment(compose(["experiment=across", "experiment.models=[{model: smollm2, colour: 1}]"],
                               root=configs), output_dir=tmp_path / "y")


def test_shipped_cross_modal_experiment_composes():
    comp = compose(["experiment=cheerful-across-modalities"])
    exp = node_to_dict(comp.config.experiment)
    models = [m["model"] if isinstance(m, dict) else m for m in exp["models"]]
    assert models == ["smollm2", "avatars", "joe"]
    assert set(exp["measures"]) == {"text", "image", "voice"}
    assert exp["styles"]


def test_create_and_demo_commands_on_tiny_models(configs, tmp_path, capsys):
    from polysteer.cli.main import main

    settings = tmp_path / "create.yaml"
    settings.write_text(yaml.safe_dump({
        "text_model": {"kind": "tiny-text"}, "image_model": {"kind": "tiny-avatar"},
        "voice_model": {"kind": "tiny-vits"}, "text_options": {"max_new_tokens": 6},
        "measures": {"text": ["changed_fraction"], "image": ["image_distance"],
                     "voice": ["voice_loudness"]}}))
    style = str(configs / "style" / "tiny-cheerful.yaml")
    out = tmp_path / "made"
    assert main(["create", "a cat on a ship", "--style", style, "--intensity", "4", "--seed", "2",
                 "--config", str(settings), "--steps", "2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed and "image_distance" in printed
    assert json.loads((out / "creation.json").read_text())["seed"] == 2
    assert (out / "portrait.png").is_file() and (out / "narration.wav").is_file()
    assert main(["demo", "--style", style, "--intensity", "4", "--config", str(settings), "--steps", "2",
                 "--output-dir", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    (folder,) = (tmp_path / "runs").iterdir()
    assert f"report: {folder / 'report.html'}" in printed and (folder / "report.html").is_file()
    assert main(["create", "x", "--config", str(settings), "--text-model", "no-such-model",
                 "-o", str(tmp_path / "bad")]) == 2
    assert "--text-model" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"  # the voice model fails to load after the story and portrait
    broken.write_text(settings.read_text().replace("tiny-vits", "no-such-kind"))
    assert main(["demo", "--style", style, "--config", str(broken), "--steps", "2",
                 "--output-dir", str(tmp_path / "failed")]) == 2
    assert list((tmp_path / "failed").iterdir()) == []  # a failed demo leaves no run folder
