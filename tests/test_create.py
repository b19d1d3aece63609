"""``polysteer create``: a story, a portrait and a narration under one style, each beside its twin.

Fast tests run the whole workflow on tiny random text, avatar and voice models with a cross-modal
style whose realisations are random directions on those models; the slow test runs the embedded
models end to end.
"""

from __future__ import annotations

import html
import json
import os
import re
import time

import pytest
import torch

from polysteer import ConfigError
from polysteer.features.concepts import direction_set
from polysteer.steering.style import Component, Realisation, Style
from polysteer.workflows.create import (
    CreateConfig,
    complete_sentences,
    create,
    sentences,
)

SITES = {"text": "blocks.1.resid_post", "image": "up.1", "voice": "text_encoder.project"}


def tiny_models() -> dict[str, object]:
    from polysteer.plugins.image.adapter import DiffusersAdapter
    from polysteer.plugins.image.testing import tiny_avatar_pipeline
    from polysteer.plugins.text.testing import tiny_text_adapter
    from polysteer.plugins.voice.testing import tiny_vits_adapter

    return {"text": tiny_text_adapter(), "image": DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar"),
            "voice": tiny_vits_adapter()}


def tiny_style(models: dict[str, object], only: tuple[str, ...] = ("text", "image", "voice")) -> Style:
    """A cross-modal concept with a random realisation per tiny model (fixed seed)."""
    g = torch.Generator().manual_seed(3)
    concepts = {}
    for modality in only:
        adapter = models[modality]
        site = SITES[modality]
        channels = adapter.bind(site).channels
        ds = direction_set([torch.randn(channels, generator=g)], ["up"], site=site, site_norm=4.0,
                           model=adapter.model_fingerprint, method="random (test)")
        concepts[modality] = Realisation(ds, "up", 1.0)
    return Style(name="tiny-cheerful", components=[Component(name="cheerful", concept="cheerful")],
                 concepts={"cheerful": concepts})


def tiny_config() -> CreateConfig:
    return CreateConfig(text_options={"max_new_tokens": 10},  # greedy: a tiny model samples near-uniformly
                        image_options={"num_inference_steps": 4}, sentences_per_call=2,
                        measures={"text": ["changed_fraction", "text_perplexity"],
                                  "image": ["image_brightness", "image_distance", "no_such_measure"],
                                  "voice": ["voice_loudness", "mean_abs_difference"]})


@pytest.fixture(scope="module")
def models():
    return tiny_models()


def _run(models, folder, *, seed=0, intensity=4.0, style=None, progress=False):
    return create("a cat on a ship", style or tiny_style(models), intensity, out=folder, seed=seed,
                  config=tiny_config(), text_model=models["text"], image_model=models["image"],
                  voice_model=models["voice"], progress=progress)


def test_sentences_and_complete_sentences():
    assert complete_sentences("I woke up. The sun was out! And then the") == "I woke up. The sun was out!"
    assert complete_sentences("no end at all") == "no end at all"
    assert complete_sentences('He said "hi." Then') == 'He said "hi."'
    said = sentences("# Title\nI woke up. The **sun** was out!  Was it?\n\nYes.")
    assert said == ["Title", "I woke up.", "The sun was out!", "Was it?", "Yes."]


def test_create_writes_every_part_beside_its_twin(models, tmp_path, capsys):
    creation = _run(models, tmp_path / "c", progress=True)
    folder = creation.folder
    for name in ("story.txt", "story.unsteered.txt", "portrait.png", "portrait.unsteered.png",
                 "narration.wav", "narration.unsteered.wav", "narration.spectrogram.png",
                 "creation.json", "report.html"):
        assert (folder / name).is_file(), name
    assert (folder / "story.txt").read_text().strip() == creation.story
    assert (folder / "story.unsteered.txt").read_text().strip() == creation.story_unsteered
    # the style changes every modality: text tokens, image pixels, the waveform
    assert creation.story != creation.story_unsteered
    assert (folder / "portrait.png").read_bytes() != (folder / "portrait.unsteered.png").read_bytes()
    assert (folder / "narration.wav").read_bytes() != (folder / "narration.unsteered.wav").read_bytes()
    parts = creation.parts
    assert set(parts) == {"story", "portrait", "narration"}
    assert parts["story"].measures["changed_fraction"]["steered"] > 0
    assert parts["story"].measures["changed_fraction"]["unsteered"] == 0
    assert parts["portrait"].measures["image_distance"]["steered"] > 0
    assert parts["narration"].measures["mean_abs_difference"]["steered"] > 0
    # a measure that cannot run is reported with its reason, not fatal
    assert "error" in parts["portrait"].measures["no_such_measure"]
    assert "error" in parts["story"].measures["text_perplexity"]  # tiny-llama is not loadable by name
    # the progress bar ran
    assert "create" in capsys.readouterr().err


def test_report_shows_parts_side_by_side_with_measures(models, tmp_path):
    creation = _run(models, tmp_path / "c")
    page = creation.report.read_text()
    for part in ("Story", "Portrait", "Narration"):
        assert f"<h2>{part}" in page
    assert page.count("<h3>unsteered</h3>") == 3 and page.count("<h3>tiny-cheerful x 4</h3>") == 3
    assert re.search(r'<audio controls[^>]*src="data:audio/wav;base64,', page)
    assert page.count("<audio") == 2
    assert 'src="portrait.png"' in page and 'src="portrait.unsteered.png"' in page
    assert 'src="narration.spectrogram.png"' in page
    assert creation.story.split()[0] in page
    # every measure appears with its change column
    for part in creation.parts.values():
        for name in part.measures:
            assert f"<td>{name}</td>" in page
    assert "not measured" in page


def test_same_seed_same_outputs_other_seed_differs(models, tmp_path):
    first = _run(models, tmp_path / "a", seed=5)
    again = _run(models, tmp_path / "b", seed=5)
    other = _run(models, tmp_path / "c", seed=6)
    for name in ("story.txt", "story.unsteered.txt", "portrait.png", "portrait.unsteered.png",
                 "narration.wav", "narration.unsteered.wav", "creation.json"):
        assert (first.folder / name).read_bytes() == (again.folder / name).read_bytes(), name
    assert json.loads((first.folder / "creation.json").read_text())["seed"] == 5
    assert (first.folder / "portrait.png").read_bytes() != (other.folder / "portrait.png").read_bytes()


def test_zero_intensity_twins_are_identical(models, tmp_path):
    creation = _run(models, tmp_path / "z", intensity=0.0)
    folder = creation.folder
    for stem, suffix in (("story", "txt"), ("portrait", "png"), ("narration", "wav")):
        steered, twin = folder / f"{stem}.{suffix}", folder / f"{stem}.unsteered.{suffix}"
        assert steered.read_bytes() == twin.read_bytes()


def test_components_that_do_not_apply_are_reported_per_part(models, tmp_path):
    style = tiny_style(models, only=("text", "voice"))  # no image realisation
    creation = _run(models, tmp_path / "p", style=style)
    assert creation.parts["portrait"].not_applied and "no image realisation" in \
        creation.parts["portrait"].not_applied[0]
    assert not creation.parts["story"].not_applied
    folder = creation.folder
    assert (folder / "portrait.png").read_bytes() == (folder / "portrait.unsteered.png").read_bytes()
    assert "no image realisation" in creation.report.read_text()


def test_wrong_or_missing_models_give_clear_errors(models, tmp_path):
    with pytest.raises(ConfigError, match="portrait needs a image model.*--image-model"):
        create("x", tiny_style(models), out=tmp_path, config=tiny_config(), text_model=models["text"],
               image_model=models["text"], voice_model=models["voice"], progress=False)
    with pytest.raises(ConfigError, match="no-such-model.*--voice-model"):
        create("x", tiny_style(models), out=tmp_path, config=tiny_config(), text_model=models["text"],
               image_model=models["image"], voice_model="no-such-model", progress=False)
    with pytest.raises(ConfigError, match="prompt"):
        create("  ", tiny_style(models), out=tmp_path, progress=False)


def test_config_from_file_names_unknown_keys(tmp_path):
    path = tmp_path / "create.yaml"
    path.write_text("text_model: smollm2\nimage_modle: avatars\n")
    with pytest.raises(ConfigError, match="image_modle.*image_model"):
        CreateConfig.from_file(path)
    path.write_text("voice_model: joe\nimage_options: {num_inference_steps: 5}\n")
    config = CreateConfig.from_file(path, text_model="other")
    assert (config.voice_model, config.text_model, config.image_options) == \
        ("joe", "other", {"num_inference_steps": 5})


def test_avatar_portrait_condition_comes_from_the_description():
    from polysteer.plugins.image.avatars import condition_from_text

    assert condition_from_text("I am a red-haired baker with glasses, walking by the sea.") == \
        {"hair_colour": "red", "glasses": "glasses", "background": "blue"}
    assert condition_from_text("My sunglasses hid my smile.") == {"glasses": "sunglasses"}
    assert "mouth" not in condition_from_text("I smiled a big smile and was sad.")
    assert condition_from_text("Nothing about looks.") == {}


@pytest.mark.slow
def test_create_end_to_end_on_the_embedded_models(tmp_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    config = CreateConfig(text_options={"max_new_tokens": 24, "do_sample": True, "temperature": 0.7,
                                        "top_p": 0.9, "repetition_penalty": 1.1},
                          image_options={"num_inference_steps": 6}, sentences_per_call=4,
                          measures={"text": ["text_positive", "changed_fraction"],
                                    "image": ["avatar_mouth_smile", "image_distance"],
                                    "voice": ["voice_pitch_median", "voice_wer"]})
    creation = create("a walk to the market on a sunny morning", "cheerful", 1.0,
                      out=tmp_path / "c", seed=0, config=config, progress=False)
    parts = creation.parts
    assert creation.story and creation.story != creation.story_unsteered
    for part in parts.values():
        assert not part.not_applied, part.not_applied
        assert all("error" not in m for m in part.measures.values()), part.measures
    text, image, voice = (parts[r].measures for r in ("story", "portrait", "narration"))
    assert text["changed_fraction"]["steered"] > 0 and image["image_distance"]["steered"] > 0
    # cheerful's voice realisation (measured prosody: higher pitch) raises the pitch; whether each
    # shipped concept moves its own measure is tested where the concepts are built
    assert voice["voice_pitch_median"]["steered"] > voice["voice_pitch_median"]["unsteered"]
    assert voice["voice_wer"]["steered"] < 0.5
    page = creation.report.read_text()
    assert page.count("<audio") == 2 and "portrait.png" in page
    assert html.escape(creation.story[:20]) in page
    assert creation.report.is_file()
    print(f"create end to end: {time.perf_counter() - start:.0f} s")
