"""Image concepts on a tiny random avatar pipeline: conditions, folders and measured attributes."""

import pytest
import torch

pytest.importorskip("diffusers")

import polysteer as ps  # noqa: E402
from polysteer.errors import ConfigError  # noqa: E402
from polysteer.plugins.image.adapter import DiffusersAdapter, save_png, to_pil  # noqa: E402
from polysteer.plugins.image.concepts import (  # noqa: E402
    ImageConceptSpec,
    build_image_concept,
    condition_concept,
    folder_concept,
    measured_concept,
)
from polysteer.plugins.image.measures import brightness  # noqa: E402
from polysteer.plugins.image.testing import tiny_avatar_pipeline  # noqa: E402


@pytest.fixture
def adapter(plugin_manager):
    return DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar")


def _style(concept, weight=1.0):
    style = ps.Style.from_dict({"name": "c", "components": [
        {"dictionary": "c", "feature": concept.labels[0], "weight": weight}]})
    style.components[0].dictionary = concept
    return style


def test_condition_concept_is_the_mean_difference_of_paired_draws(adapter):
    concept = condition_concept(adapter, "sunglasses", "mid", {"glasses": "sunglasses"},
                                {"glasses": "none"}, samples=4, steps=3)
    assert concept.info.site == "mid" and concept.d_in == adapter.bind("mid").channels
    assert concept.info.model == adapter.model_fingerprint
    assert float(concept.scales[0]) > 0
    with pytest.raises(ConfigError, match="identical"):
        condition_concept(adapter, "x", "mid", {"glasses": "none"}, {"glasses": "none"}, samples=2, steps=2)


def test_measured_concept_steers_its_measure(adapter):
    concept = measured_concept(adapter, "bright", "up.0", "brightness", samples=32, steps=3)
    style = _style(concept)
    levels = []
    for intensity in (-4.0, 0.0, 4.0):
        with ps.steer(adapter, style, intensity=intensity):
            images = adapter.generate(8, seed=5, num_inference_steps=3).outputs
            levels.append(float(brightness(images).mean()))
    assert levels[0] < levels[1] < levels[2]


def test_folder_concept_reads_real_images(adapter, tmp_path):
    for name, value in (("light", 0.9), ("dark", 0.1)):
        (tmp_path / name).mkdir()
        g = torch.Generator().manual_seed(len(name))
        images = (value + 0.05 * torch.randn(3, 3, 16, 16, generator=g)).clamp(0, 1)
        for i, image in enumerate(to_pil(images)):
            save_png(image, tmp_path / name / f"{i}.png")
    concept = folder_concept(adapter, "light", "down.1", tmp_path / "light", tmp_path / "dark", steps=4)
    assert concept.d_in == adapter.bind("down.1").channels and float(concept.scales[0]) > 0
    with pytest.raises(ConfigError, match="no .png"):
        folder_concept(adapter, "x", "mid", tmp_path, tmp_path / "dark")


def test_spec_needs_exactly_one_source(tmp_path, adapter):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\nsite: mid\nmeasure: warmth\npositive: {glasses: none}\n")
    with pytest.raises(ConfigError, match="exactly one"):
        ImageConceptSpec.load(path)
    path.write_text("name: c\nsite: mid\nmeasure: warmth\nsamples: 4\nsteps: 2\n")
    concept = build_image_concept(adapter, ImageConceptSpec.load(path))
    assert concept.labels == ["c"] and concept.info.method == "probe"


def test_rendered_pairs_differ_only_where_the_label_does(adapter):
    pytest.importorskip("python_avatars")
    pytest.importorskip("resvg_py")
    from polysteer.plugins.image.avatars import render_pairs
    from polysteer.plugins.image.concepts import render_concept

    shades, bare = render_pairs(3, {"glasses": "sunglasses"}, {"glasses": "none"}, size=32)
    rows_changed = (shades.int() - bare.int()).abs().amax(dim=(0, 1, 3)) > 24
    assert rows_changed.any() and rows_changed[:8].sum() == 0 and rows_changed[20:].sum() == 0  # eye band
    with pytest.raises(ValueError, match="do not pair"):
        render_pairs(1, {"glasses": "glasses"}, {"glasses": "none"})
    concept = render_concept(adapter, "shades", "mid", {"glasses": "sunglasses"}, {"glasses": "none"},
                             samples=3, steps=4)
    assert concept.info.details["source"] == "rendered pairs" and float(concept.scales[0]) > 0


def test_region_cells_read_like_the_region_mask():
    from polysteer.plugins.image.concepts import region_cells

    cells = region_cells(16, {"top": 0.0, "bottom": 0.5, "left": 0.5, "right": 1.0}).view(4, 4)
    assert cells.tolist() == [[False, False, True, True]] * 2 + [[False] * 4] * 2
    assert region_cells(9, None).all()
    with pytest.raises(ConfigError, match="square"):
        region_cells(12, {"top": 0.0})
