"""The unified harvest and concept builder give what the per-plugin builders gave before them.

``tests/data/builders-before-unification.safetensors`` holds vectors, site norms and harvested rows
computed on the tiny test models by the code the core harvest replaced (the script beside it, run
at commit cdebad0). Every builder must reproduce them on the same inputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import polysteer as ps

BEFORE = load_file(Path(__file__).parent / "data" / "builders-before-unification.safetensors")
TOL = {"atol": 1e-5, "rtol": 1e-4}
MEASURED_TOL = {"atol": 1e-4, "rtol": 1e-3}  # FFT-based measures vary in the 4th digit with threads


def _vector(d: ps.DirectionSet) -> torch.Tensor:
    return d.directions[0] * d.scales[0]


# -- text ------------------------------------------------------------------------------------------
@pytest.fixture
def text_adapter(plugin_manager):
    pytest.importorskip("transformers")
    from polysteer.plugins.text.testing import tiny_text_adapter

    return tiny_text_adapter("llama")


@pytest.mark.parametrize("method", ["mean-diff", "pca"])
def test_text_concepts_are_unchanged(text_adapter, method):
    from polysteer.plugins.text.concepts import ConceptSpec, build_concept

    spec = ConceptSpec(name="happy", site="blocks.1.resid_post", method=method,
                       positive=["the cat is happy", "a good day", "very happy friend"],
                       negative=["the cat is sad", "a bad day", "very sad friend"])
    d = build_concept(text_adapter, spec)
    torch.testing.assert_close(_vector(d), BEFORE[f"text.{method}.vector"], **TOL)
    assert d.info.site_norm == pytest.approx(float(BEFORE[f"text.{method}.site_norm"]), rel=1e-5)
    assert d.info.method == method and d.info.model == text_adapter.model_fingerprint


def test_text_readers_are_unchanged(text_adapter):
    from polysteer.plugins.text.classify import text_activations
    from polysteer.plugins.text.concepts import harvest_tokens

    texts = ["the cat", "the cat sat on the mat", "a good day to you all"]
    got = harvest_tokens(text_adapter, texts, ["blocks.0.resid_post"], batch_size=2)
    torch.testing.assert_close(torch.cat(got["blocks.0.resid_post"]), BEFORE["text.harvest_tokens"], **TOL)
    read = text_activations(text_adapter, texts, "blocks.0.resid_post", batch_size=2)
    torch.testing.assert_close(torch.cat(read), BEFORE["text.text_activations"], **TOL)


# -- image -----------------------------------------------------------------------------------------
@pytest.fixture
def image_adapter(plugin_manager):
    pytest.importorskip("diffusers")
    from polysteer.plugins.image.adapter import DiffusersAdapter
    from polysteer.plugins.image.testing import tiny_avatar_pipeline

    return DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar")


@pytest.mark.parametrize("method", ["mean-diff", "pca"])
def test_image_condition_concepts_are_unchanged(image_adapter, method):
    from polysteer.plugins.image.concepts import condition_concept

    d = condition_concept(image_adapter, "sunglasses", "mid", {"glasses": "sunglasses"},
                          {"glasses": "none"}, samples=4, steps=3, method=method, window=(0.3, 1.0))
    torch.testing.assert_close(_vector(d), BEFORE[f"image.condition.{method}.vector"], **TOL)
    torch.testing.assert_close(d.scales, BEFORE[f"image.condition.{method}.scale"], **TOL)
    assert d.info.site_norm == pytest.approx(float(BEFORE[f"image.condition.{method}.site_norm"]), rel=1e-5)


def test_image_region_measured_and_folder_concepts_are_unchanged(image_adapter):
    from polysteer.plugins.image.concepts import _image_contrast, condition_concept, measured_concept

    d = condition_concept(image_adapter, "sunglasses", "mid", {"glasses": "sunglasses"}, {"glasses": "none"},
                          samples=4, steps=3, region={"top": 0.0, "bottom": 0.5, "left": 0.0, "right": 1.0})
    torch.testing.assert_close(_vector(d), BEFORE["image.condition.region.vector"], **TOL)
    d = measured_concept(image_adapter, "bright", "up.0", "brightness", samples=8, steps=3)
    torch.testing.assert_close(_vector(d), BEFORE["image.measured.vector"], **TOL)
    assert d.info.site_norm == pytest.approx(float(BEFORE["image.measured.site_norm"]), rel=1e-5)
    assert d.info.method == "probe" and d.info.details["train_r"] > 0
    d = _image_contrast(image_adapter, "light", "down.1", BEFORE["image.folder.light"],
                        BEFORE["image.folder.dark"], steps=4, window=(0.0, 0.5), seed=0, region=None,
                        details={})
    torch.testing.assert_close(_vector(d), BEFORE["image.folder.vector"], **TOL)
    assert d.info.site_norm == pytest.approx(float(BEFORE["image.folder.site_norm"]), rel=1e-5)


def test_image_sae_harvest_is_unchanged(image_adapter):
    from polysteer.plugins.image import sae as image_sae

    h = image_sae.harvest(image_adapter, "mid", images=6, batch=4, steps=4, at=(0.0, 1.0), progress=False,
                          measures=lambda x: {"brightness": x.mean(dim=(1, 2, 3))})
    torch.testing.assert_close(h.acts, BEFORE["image.sae.acts"], **TOL)
    torch.testing.assert_close(h.measures["brightness"], BEFORE["image.sae.brightness"], **TOL)
    assert h.steps == [0, 3] and len(h.conditions) == 6


# -- voice -----------------------------------------------------------------------------------------
VOICE_INPUTS = [{"phonemes": "həlˈoʊ"}, {"phonemes": "ðɪs ɪz ɐ tˈɛst"}, {"phonemes": "wʌn tuː θɹiː"}]


@pytest.fixture
def voice_adapter(plugin_manager):
    pytest.importorskip("transformers")
    from polysteer.plugins.voice.testing import tiny_vits_adapter

    return tiny_vits_adapter()


def test_voice_harvest_and_probes_are_unchanged(voice_adapter):
    from polysteer.plugins.voice import features
    from polysteer.workflows.concept_builder import probe_concept

    site = "text_encoder.layers.1"
    h = features.harvest(voice_adapter, VOICE_INPUTS, [site, "duration_predictor.input"], progress=False)
    torch.testing.assert_close(torch.cat(h.acts[site]), BEFORE["voice.acts"], **TOL)
    for name in ("pitch", "centroid", "log_duration"):
        got = torch.cat(getattr(h, name))
        torch.testing.assert_close(got, BEFORE[f"voice.{name}"], equal_nan=True, **MEASURED_TOL)
    w, _ = features.probe_direction(h.acts[site], h.centroid)
    torch.testing.assert_close(w, BEFORE["voice.probe.brightness"], **MEASURED_TOL)
    w, _ = features.probe_direction(h.acts["duration_predictor.input"], h.log_duration)
    torch.testing.assert_close(w, BEFORE["voice.probe.rate"], **TOL)
    # the builder build_voice_dictionaries uses: the same probe, packed with its site norm
    got = features._collect(voice_adapter, VOICE_INPUTS, ["duration_predictor.input"], progress=False)
    d = probe_concept("slower", "duration_predictor.input", got, "log_duration",
                      model=voice_adapter.model_fingerprint, ridge=0.1, method="linear-probe")
    torch.testing.assert_close(_vector(d), BEFORE["voice.probe.rate"], **TOL)
    rows = torch.cat(h.acts["duration_predictor.input"])
    assert d.info.site_norm == pytest.approx(float(rows.norm(dim=-1).median()))


def test_voice_frame_harvest_is_unchanged(voice_adapter):
    from polysteer.plugins.voice.sae import harvest_frames

    frames, values = harvest_frames(voice_adapter, VOICE_INPUTS[:2], seeds=(0, 1), progress=False)
    torch.testing.assert_close(frames, BEFORE["voice.frames"], **TOL)
    for name, value in values.items():
        torch.testing.assert_close(value, BEFORE[f"voice.frames.{name}"], equal_nan=True, **TOL)
