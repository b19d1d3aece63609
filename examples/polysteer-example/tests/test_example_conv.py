"""What the example adapter adds beyond the conformance suite: streaming, sites, config, measure."""

from __future__ import annotations

import pytest
import torch
from polysteer import BCT, ConfigError, Generation, InTuple, SteeringError, load_model, steer

import polysteer_example
from polysteer_example import ExampleConvAdapter, TinyWaveNet, WaveNetConfig, example_frames


@pytest.fixture
def adapter() -> ExampleConvAdapter:
    """The default-sized example model."""
    return ExampleConvAdapter()


def test_streaming_matches_full_recompute(adapter: ExampleConvAdapter) -> None:
    frames = example_frames(samples=3, length=5)
    streamed = adapter.generate(frames, max_new_frames=12).outputs
    full = adapter.generate(frames, max_new_frames=12, use_cache=False).outputs
    assert streamed.shape == (3, 8, 17)
    assert torch.equal(streamed[..., :5], frames)
    torch.testing.assert_close(streamed, full)


def test_guidance_scale_one_is_the_conditional_model(adapter: ExampleConvAdapter) -> None:
    frames = example_frames()
    torch.testing.assert_close(adapter.generate(frames, max_new_frames=4, guidance_scale=1.0).outputs,
                               adapter.generate(frames, max_new_frames=4).outputs)


def test_sites_use_channels_first_layouts(adapter: ExampleConvAdapter) -> None:
    assert adapter.sites()[0] == "embed" and adapter.sites()[-1] == "skips"
    residual, skip = adapter.bind("blocks.2.residual"), adapter.bind("blocks.2.skip")
    for binding, index in ((residual, 0), (skip, 1)):
        assert isinstance(binding.layout, InTuple) and binding.layout.index == index
        assert isinstance(binding.layout.inner, BCT)
    assert residual.module is skip.module is adapter.model.blocks[2]
    skips = adapter.bind("skips")
    assert skips.hook == "input" and skips.module is adapter.model.head
    with pytest.raises(SteeringError, match=r"sites are embed, blocks\.0\.\.2\.\{residual,skip\}, skips"):
        adapter.bind("blocks.3.skip")
    with pytest.raises(SteeringError, match="Did you mean 'blocks.2.skip'"):
        adapter.bind("blocks.2.skp")


def test_capture_is_frames_as_positions(adapter: ExampleConvAdapter) -> None:
    frames = example_frames(samples=2, length=6)
    with steer(adapter, None, capture=["blocks.0.skip", "skips"]) as run:
        adapter.generate(frames, max_new_frames=3)
    # 6 prompt frames seen at once, then 1 new frame per decode step: (B, T, C)
    assert run.captured("blocks.0.skip").shape == (2, 8, 16)
    assert run.captured("skips").shape == (2, 8, 16)


def test_bad_inputs_are_clear_errors(adapter: ExampleConvAdapter) -> None:
    with pytest.raises(ValueError, match=r"frames shaped \(batch, 8, time >= 1\)"):
        adapter.generate(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="max_frames=16"):
        ExampleConvAdapter(TinyWaveNet(WaveNetConfig(max_frames=16))).generate(
            example_frames(length=10), max_new_frames=7)


def test_prepare_inputs_and_describe_outputs(adapter: ExampleConvAdapter) -> None:
    assert torch.equal(adapter.prepare_inputs(None), example_frames())
    inputs = adapter.prepare_inputs(example_frames(samples=1, length=2).tolist())
    lines = adapter.describe_outputs(adapter.generate(inputs, max_new_frames=2))
    assert len(lines) == 1 and lines[0].startswith("4 frames, energy ")


def test_building_a_model_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TinyWaveNet(WaveNetConfig(seed=7))
    assert torch.equal(torch.rand(3), expected)


def test_load_model_through_the_registry(register_plugin) -> None:
    register_plugin(polysteer_example, "example")
    adapter = load_model("example-conv", n_blocks=2, channels=4)
    assert isinstance(adapter, ExampleConvAdapter)
    assert adapter.sites() == ["embed", "blocks.0.residual", "blocks.0.skip", "blocks.1.residual",
                               "blocks.1.skip", "skips"]
    assert adapter.bind("embed").channels == 4
    with pytest.raises(ConfigError, match="n_block.*accepts: .*n_blocks"):
        load_model("example-conv", n_block=2)
    with pytest.raises(ConfigError, match="model.channels"):
        load_model({"kind": "example-conv", "channels": "wide"})


def test_centroid_shift_measure(register_plugin, plugin_manager) -> None:
    register_plugin(polysteer_example, "example")
    measure = plugin_manager.measures.get("example_centroid_shift")
    low = torch.zeros(1, 8, 4)
    low[:, 1] = 1.0
    high = torch.zeros(1, 8, 4)
    high[:, 5] = 1.0
    low, high = Generation(low, "audio-frames"), Generation(high, "audio-frames")
    assert measure(low, low) == 0.0
    assert measure(high, low) == pytest.approx(4.0)


def test_label_by_effect_names_a_feature_by_what_it_does_to_the_centroid(register_plugin) -> None:
    from polysteer import direction_set
    from polysteer.workflows import Candidate, label_by_effect

    register_plugin(polysteer_example, "example")
    adapter = load_model("example-conv")
    site = "skips"
    u = torch.randn(adapter.bind(site).channels, generator=torch.Generator().manual_seed(0))
    d = direction_set([u, -u], ["u", "minus u"], site=site, site_norm=1.0,
                      model=adapter.model_fingerprint, method="test")
    both = [Candidate(0, "centroid"), Candidate(1, "centroid")]  # each claims to raise the centroid
    result = label_by_effect(adapter, d, both, example_frames(samples=4), "example-centroid", intensity=0.5)
    changes = [o.change for o in result.outcomes]
    assert changes[0] * changes[1] < 0  # a direction and its opposite move the centroid both ways
    raises = 0 if changes[0] > 0 else 1
    assert list(result.evidence) == [f"centroid+ ({raises})"]
    assert d.labels[1 - raises] == ["u", "minus u"][1 - raises]  # the other keeps its label
