"""The ``rotate`` intervention: its geometry on plain tensors, then through polysteer's runtime."""

from __future__ import annotations

import math

import pytest
import torch
from polysteer import SteeringError, direction_set, steer
from polysteer.testing import probe_style

import polysteer_example
from polysteer_example import ExampleConvAdapter, Rotate, example_frames, make_rotate


def _dictionary(direction: torch.Tensor):
    """A one-feature direction set, not tied to any model (enough for the factory)."""
    return direction_set([direction], ["f"], site="s", site_norm=1.0, model=None, method="test")


@pytest.fixture
def x() -> torch.Tensor:
    """Activations ``(B=3, P=5, C=6)`` with a few exact zeros and negative zeros."""
    x = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(1))
    x[0, 0, 0], x[1, 2, 3] = 0.0, -0.0
    return x


@pytest.fixture
def d() -> torch.Tensor:
    """A unit feature direction ``(6,)``."""
    d = torch.randn(6, generator=torch.Generator().manual_seed(2))
    return d / d.norm()


def _angle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Angle between vectors along the last axis, in radians (float64 for a tight check)."""
    u, v = u.double(), v.double()
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.arccos(cos.clamp(-1, 1))


@pytest.mark.parametrize("radians", [None, 0.7])
def test_zero_weight_is_bit_identical(x: torch.Tensor, d: torch.Tensor, radians: float | None) -> None:
    rotate = Rotate(d, radians)
    for w in (0.0, torch.zeros(3, 1, 1), torch.zeros(3, 5, 1)):
        y = rotate.apply(x, w)
        # torch.equal treats 0.0 == -0.0; compare the bits so sign flips would be caught too
        assert torch.equal(y.view(torch.int32), x.view(torch.int32))


def test_rows_with_zero_weight_are_untouched(x: torch.Tensor, d: torch.Tensor) -> None:
    w = torch.tensor([0.0, 0.5, 0.0])[:, None, None]
    y = Rotate(d).apply(x, w)
    assert torch.equal(y[[0, 2]].view(torch.int32), x[[0, 2]].view(torch.int32))
    assert not torch.allclose(y[1], x[1])


@pytest.mark.parametrize("w", [0.3, 1.0, -0.8, 2.5])
@pytest.mark.parametrize("radians", [None, 1.1])
def test_norm_is_preserved(x: torch.Tensor, d: torch.Tensor, w: float, radians: float | None) -> None:
    y = Rotate(d, radians).apply(x, w)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))


def test_change_stays_in_the_plane_of_the_feature_and_x(x: torch.Tensor, d: torch.Tensor) -> None:
    y = Rotate(d, 0.9).apply(x, 1.0)
    ortho = x - (x @ d)[..., None] * d
    basis = torch.stack([d.expand_as(x), ortho / ortho.norm(dim=-1, keepdim=True)], dim=-2)
    delta = y - x
    in_plane = (basis @ delta[..., None]).transpose(-1, -2) @ basis
    torch.testing.assert_close(in_plane[..., 0, :], delta)


def test_fixed_degrees_turn_by_exactly_that_angle(x: torch.Tensor, d: torch.Tensor) -> None:
    y = Rotate(d, math.radians(10)).apply(x, 2.0)
    torch.testing.assert_close(_angle(x, y), torch.full(x.shape[:2], math.radians(20), dtype=torch.float64),
                               atol=1e-5, rtol=0)
    # positive weights turn towards the feature: the angle to it shrinks by 20 degrees
    torch.testing.assert_close(_angle(x, d) - _angle(y, d), _angle(x, y), atol=1e-5, rtol=0)


def test_default_unit_weight_aligns_with_the_feature(x: torch.Tensor, d: torch.Tensor) -> None:
    y = Rotate(d).apply(x, 1.0)
    torch.testing.assert_close(y, x.norm(dim=-1, keepdim=True) * d, atol=1e-5, rtol=1e-5)
    half = Rotate(d).apply(x, 0.5)
    torch.testing.assert_close(_angle(half, d), _angle(x, d) / 2, atol=1e-5, rtol=0)


def test_activation_on_the_feature_axis_is_left_alone(d: torch.Tensor) -> None:
    x = torch.stack([2.0 * d, -3.0 * d])[:, None, :]
    for radians in (None, 1.0):
        y = Rotate(d, radians).apply(x, 1.0)
        assert torch.isfinite(y).all()
        assert torch.equal(y, x)


def test_factory_options(d: torch.Tensor) -> None:
    dictionary = _dictionary(d * 3.0)
    assert make_rotate(dictionary, 0, {}).radians is None
    assert make_rotate(dictionary, 0, {"degrees": 90}).radians == pytest.approx(math.pi / 2)
    with pytest.raises(ValueError, match="allowed: \\['degrees'\\]"):
        make_rotate(dictionary, 0, {"angle": 3})
    with pytest.raises(ValueError, match="finite number"):
        make_rotate(dictionary, 0, {"degrees": "ninety"})


# -- through polysteer: a style component with `intervention: rotate` ----------------------------
@pytest.fixture
def adapter(register_plugin) -> ExampleConvAdapter:
    """The example adapter with the example plugin registered (entry point or not)."""
    register_plugin(polysteer_example, "example")
    return ExampleConvAdapter()


def test_rotate_steers_the_example_model(adapter: ExampleConvAdapter) -> None:
    frames, site = example_frames(), "blocks.1.residual"
    plain = adapter.generate(frames, max_new_frames=4).outputs
    style = probe_style(adapter, site, frames, intervention="rotate")
    with steer(adapter, style, intensity=0.0):
        assert torch.equal(adapter.generate(frames, max_new_frames=4).outputs, plain)
    with steer(adapter, None, capture=[site]) as before:
        adapter.generate(frames, max_new_frames=4)
    with steer(adapter, style, intensity=0.5, capture=[site]) as run:
        steered = adapter.generate(frames, max_new_frames=4).outputs
    assert not torch.equal(steered, plain)
    # the prompt pass sees the same input either way, so the rotation's norm guarantee shows
    prompt = frames.shape[-1]
    torch.testing.assert_close(run.captured(site)[:, :prompt].norm(dim=-1),
                               before.captured(site)[:, :prompt].norm(dim=-1))


def test_bad_rotate_option_is_a_steering_error(adapter: ExampleConvAdapter) -> None:
    style = probe_style(adapter, "embed", example_frames(), intervention="rotate",
                        options={"turns": 1})
    with pytest.raises(SteeringError, match="rotate.*turns"), steer(adapter, style):
        pass
