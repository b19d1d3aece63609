"""Cross-modal styles on the tiny models: per-realisation settings, skip reporting, algebra, files.

One style holds a concept (``cheerful``) realised on a tiny text model, a tiny avatar model and a
tiny VITS voice (the image realisation with a spatial region), plus a text-only component
(``concise``, a dictionary of the text model). Applied to each model, the style uses that model's
realisation, reports once what does not apply, never crashes, and leaves outputs bit-identical at
intensity 0.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import polysteer as ps
from polysteer.errors import SteeringError
from polysteer.features.concepts import direction_set
from polysteer.steering.runtime import SteeringWarning, steer
from polysteer.steering.style import Component, Realisation, Style

REGION = {"kind": "region", "top": 0.5, "bottom": 1.0, "left": 0.0, "right": 0.5}
SITES = {"text": "blocks.1.resid_post", "image": "up.1", "voice": "text_encoder.layers.1"}


@pytest.fixture(scope="module")
def adapters():
    from polysteer.plugins.image.adapter import DiffusersAdapter
    from polysteer.plugins.image.testing import tiny_avatar_pipeline
    from polysteer.plugins.text.testing import tiny_text_adapter
    from polysteer.plugins.voice.testing import tiny_vits_adapter

    return {"text": tiny_text_adapter(), "image": DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar"),
            "voice": tiny_vits_adapter()}


def _generate(adapter):
    if adapter.modality == "text":
        return adapter.generate(["hello there", "a b c"], max_new_tokens=4, chat=False).outputs
    if adapter.modality == "image":
        return adapter.generate(2, num_inference_steps=2, seed=0).outputs
    return adapter.generate({"phonemes": "həlˈoʊ wˈɜːld."}, seed=0).outputs


@pytest.fixture(scope="module")
def folder(adapters, tmp_path_factory):
    """One saved one-feature dictionary per tiny model (a random unit direction at its site)."""
    root = tmp_path_factory.mktemp("xmodal")
    for modality, adapter in adapters.items():
        site = SITES[modality]
        channels = adapter.bind(site).channels
        vector = torch.randn(channels, generator=torch.Generator().manual_seed(1))
        d = direction_set([vector / vector.norm()], ["cheerful"], site=site, site_norm=4.0,
                          model=adapter.model_fingerprint, method="test")
        d.save(root / f"{modality}-cheerful")
    text = adapters["text"]
    vector = torch.randn(text.bind(SITES["text"]).channels, generator=torch.Generator().manual_seed(2))
    direction_set([vector / vector.norm()], ["concise"], site=SITES["text"], site_norm=4.0,
                  model=text.model_fingerprint, method="test").save(root / "text-concise")
    return root


def _cheerful(folder, component_positions=None) -> Style:
    data = {
        "name": "cheerful",
        "concepts": {"cheerful": {
            "text": {"dictionary": "text-cheerful", "feature": "cheerful", "weight": 0.5,
                     "schedule": {"kind": "ramp", "end": 0.5}},
            "image": {"dictionary": "image-cheerful", "feature": "cheerful", "weight": 2.0,
                      "positions": REGION, "branches": ["cond"]},
            "voice": {"dictionary": "voice-cheerful", "feature": "cheerful", "weight": 1.5,
                      "intervention": "add", "options": {}},
        }},
        "components": [{"concept": "cheerful", "weight": 1.0}],
    }
    if component_positions:
        data["components"][0]["positions"] = component_positions
    return Style.from_dict(data, base_dir=folder)


def _concise(folder) -> Style:
    return Style.from_dict({"name": "concise", "components": [
        {"dictionary": "text-concise", "feature": "concise", "weight": 1.0}]}, base_dir=folder)


def test_realisation_settings_parse_and_round_trip(folder, tmp_path):
    style = _cheerful(folder)
    image = style.concepts["cheerful"]["image"]
    assert image.positions == REGION and image.branches == ("cond",) and image.weight == 2.0
    assert style.concepts["cheerful"]["text"].schedule == {"kind": "ramp", "end": 0.5}
    assert style.concepts["cheerful"]["text"].positions is None  # text: as the component says
    again = Style.from_dict(style.to_dict(), base_dir=folder)
    assert again.concepts == style.concepts and again.to_dict() == style.to_dict()
    style.save(tmp_path / "cheerful.yaml")
    loaded = Style.load(tmp_path / "cheerful.yaml")
    assert loaded.concepts == style.concepts and loaded.components == style.components


def test_bad_realisation_settings_name_the_key(folder):
    data = _cheerful(folder).to_dict()
    data["concepts"]["cheerful"]["image"]["positons"] = REGION
    with pytest.raises(ps.ConfigError, match=r"concepts\.cheerful\.image\.positons.*Did you mean"):
        Style.from_dict(data)
    data["concepts"]["cheerful"]["image"].pop("positons")
    data["concepts"]["cheerful"]["image"]["schedule"] = {"end": 0.3}
    with pytest.raises(ps.ConfigError, match=r"concepts\.cheerful\.image\.schedule"):
        Style.from_dict(data)


def test_algebra_keeps_realisations_and_round_trips(folder):
    mix = 0.7 * _cheerful(folder) + 0.5 * _concise(folder)
    weights = {c.name: c.weight for c in mix.components}
    assert weights == pytest.approx({"cheerful": 0.7, "concise": 0.5})
    assert mix.concepts["cheerful"]["image"].positions == REGION
    again = Style.from_dict(mix.to_dict(), base_dir=folder)
    assert again.to_dict() == mix.to_dict()


@pytest.mark.parametrize("modality", ["text", "image", "voice"])
def test_mix_applies_per_modality_and_reports_the_rest_once(adapters, folder, modality):
    adapter = adapters[modality]
    mix = 0.7 * _cheerful(folder) + 0.5 * _concise(folder)
    plain = _generate(adapter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with steer(adapter, mix, intensity=1.0) as run:
            steered = _generate(adapter)
    ours = [w for w in caught if issubclass(w.category, SteeringWarning)]
    if modality == "text":
        assert run.applied == ["cheerful", "concise"] and run.skipped == [] and not ours
    else:
        assert run.applied == ["cheerful"]
        assert [name for name, _ in run.skipped] == ["concise"]
        reason = run.skipped[0][1]
        assert "blocks.1.resid_post" in reason and modality in reason and "unknown site" not in reason
        assert len(ours) == 1 and "concise" in str(ours[0].message)
    assert not _same(plain, steered), f"the {modality} realisation changed nothing"


@pytest.mark.parametrize("modality", ["text", "image", "voice"])
def test_zero_intensity_is_bit_exact(adapters, folder, modality):
    adapter = adapters[modality]
    mix = 0.7 * _cheerful(folder) + 0.5 * _concise(folder)
    plain = _generate(adapter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SteeringWarning)
        with steer(adapter, mix, intensity=0.0):
            steered = _generate(adapter)
    assert _same(plain, steered)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_image_realisation_region_limits_the_change(adapters, folder):
    adapter = adapters["image"]
    site = SITES["image"]
    with steer(adapter, None, capture=[site]) as before:
        adapter.generate(1, num_inference_steps=1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SteeringWarning)
        with steer(adapter, _cheerful(folder), capture=[site]) as after:
            adapter.generate(1, num_inference_steps=1, seed=0)
    delta = (after.captured(site) - before.captured(site)).abs().amax(dim=-1).flatten(0, -2)
    h = w = int(delta.shape[-1] ** 0.5)
    grid = delta.reshape(-1, h, w)
    inside = grid[:, h // 2:, : w // 2]
    outside = torch.cat([grid[:, : h // 2].flatten(1), grid[:, h // 2:, w // 2:].flatten(1)], 1)
    assert inside.amax() > 1e-3 and outside.amax() < 1e-6


@pytest.mark.parametrize("modality", ["text", "voice"])
def test_region_on_a_concept_component_does_not_crash_sequence_models(adapters, folder, modality):
    adapter = adapters[modality]
    style = _cheerful(folder, component_positions=REGION)
    style.concepts["cheerful"]["image"].positions = None  # the region only on the component
    plain = _generate(adapter)
    with pytest.warns(SteeringWarning, match="spatial") as caught:
        with steer(adapter, style) as run:
            steered = _generate(adapter)
    assert len([w for w in caught if issubclass(w.category, SteeringWarning)]) == 1
    assert run.applied == ["cheerful"]
    assert [name for name, _ in run.skipped] == ["cheerful.positions"]
    assert not _same(plain, steered)


def test_region_on_a_text_dictionary_is_an_error_when_the_style_opens(adapters, folder):
    adapter = adapters["text"]
    style = Style(name="bad", components=[Component(
        name="c", dictionary="text-concise", feature="concise", positions=REGION)], base_dir=folder)
    with pytest.raises(SteeringError, match="spatial site.*span"):
        with steer(adapter, style):
            pass


def test_region_in_a_text_realisation_is_an_error(adapters, folder):
    style = _cheerful(folder)
    style.concepts["cheerful"]["text"] = Realisation("text-cheerful", "cheerful", positions=REGION)
    with pytest.raises(SteeringError, match="cheerful.*spatial site"):
        with steer(adapters["text"], style):
            pass
