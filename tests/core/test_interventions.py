"""Interventions: what add, ablate, scale and clamp do to a ``(B, P, C)`` activation."""

from __future__ import annotations

import pytest
import torch

from polysteer.features.dictionary import DictionaryInfo, DirectionSet, SparseAutoencoder
from polysteer.steering.interventions import (
    BUILTIN_INTERVENTIONS,
    make_ablate,
    make_add,
    make_clamp,
    make_scale,
)

D_IN = 16
SITE_NORM = 3.5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _info() -> DictionaryInfo:
    return DictionaryInfo(model=None, site="blocks.0.resid_post", site_norm=SITE_NORM)


@pytest.fixture
def dirs() -> DirectionSet:
    raw = torch.randn(3, D_IN, generator=_gen(0)) * 4
    return DirectionSet(raw, _info(), ["a", "b", "c"], torch.tensor([2.0, 0.5, 7.0]))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 5, D_IN, generator=_gen(1)) * 3


def _proj(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return x @ d


def test_builtin_kinds():
    assert set(BUILTIN_INTERVENTIONS) == {"add", "clamp", "ablate", "scale"}


def test_add_moves_w_site_norms_along_the_unit_direction(dirs, x):
    iv = make_add(dirs, 1, {})
    u = dirs.directions[1]
    w = torch.tensor([0.5, -2.0]).reshape(2, 1, 1)
    y = iv.apply(x, w)
    assert torch.allclose(y - x, w * SITE_NORM * u, atol=1e-5)
    # the move is along u only: nothing orthogonal to it changes
    delta = y - x
    assert torch.allclose(delta - _proj(delta, u)[..., None] * u, torch.zeros_like(x), atol=1e-5)
    assert torch.allclose((y - x).norm(dim=-1)[0], torch.full((5,), 0.5 * SITE_NORM), atol=1e-5)


def test_add_with_a_per_position_weight(dirs, x):
    w = torch.zeros(2, 5, 1)
    w[1, 3] = 1.0
    y = make_add(dirs, 0, {}).apply(x, w)
    changed = (y != x).any(-1)
    assert changed.tolist() == [[False] * 5, [False, False, False, True, False]]


@pytest.mark.parametrize("make", [make_add, make_ablate, make_scale, make_clamp])
def test_zero_weight_is_exact_identity(dirs, x, make):
    iv = make(dirs, 2, {})
    assert torch.equal(iv.apply(x, torch.zeros(2, 5, 1)), x)
    assert torch.equal(iv.apply(x, 0.0), x)


def test_ablate_with_w1_leaves_zero_projection(dirs, x):
    u = dirs.directions[0]
    assert _proj(x, u).abs().min() > 1e-3
    y = make_ablate(dirs, 0, {}).apply(x, 1.0)
    assert torch.allclose(_proj(y, u), torch.zeros(2, 5), atol=1e-5)
    # the orthogonal part is untouched
    assert torch.allclose(y, x - _proj(x, u)[..., None] * u, atol=1e-6)


def test_ablate_partial_removes_that_fraction(dirs, x):
    u = dirs.directions[0]
    y = make_ablate(dirs, 0, {}).apply(x, 0.25)
    assert torch.allclose(_proj(y, u), 0.75 * _proj(x, u), atol=1e-5)


@pytest.mark.parametrize("w", [0.5, 1.0, -0.5, 3.0])
def test_scale_multiplies_the_component_by_one_plus_w(dirs, x, w):
    u = dirs.directions[2]
    y = make_scale(dirs, 2, {}).apply(x, w)
    assert torch.allclose(_proj(y, u), (1 + w) * _proj(x, u), atol=1e-4)
    ortho = lambda t: t - _proj(t, u)[..., None] * u  # noqa: E731
    assert torch.allclose(ortho(y), ortho(x), atol=1e-5)


def test_scale_minus_one_removes_the_component(dirs, x):
    u = dirs.directions[1]
    y = make_scale(dirs, 1, {}).apply(x, -1.0)
    assert torch.allclose(_proj(y, u), torch.zeros(2, 5), atol=1e-5)


@pytest.mark.parametrize(("value", "feature"), [(1.0, 0), (2.5, 1), (-1.0, 2)])
def test_clamp_direction_sets_projection_to_value_times_scale(dirs, x, value, feature):
    u = dirs.directions[feature]
    target = value * float(dirs.scales[feature])
    opts = {} if value == 1.0 else {"value": value}
    y = make_clamp(dirs, feature, opts).apply(x, 1.0)
    assert torch.allclose(_proj(y, u), torch.full((2, 5), target), atol=1e-4)
    ortho = lambda t: t - _proj(t, u)[..., None] * u  # noqa: E731
    assert torch.allclose(ortho(y), ortho(x), atol=1e-5)


def test_clamp_direction_blends_with_w(dirs, x):
    u = dirs.directions[0]
    target = float(dirs.scales[0])
    y = make_clamp(dirs, 0, {}).apply(x, 0.5)
    assert torch.allclose(_proj(y, u), 0.5 * _proj(x, u) + 0.5 * target, atol=1e-4)


# -- clamp on sparse autoencoders -----------------------------------------------------------------
def _orthogonal_relu_sae() -> SparseAutoencoder:
    """A ReLU SAE whose decoder rows are orthonormal and whose encoder is its transpose.

    Then ``pre(x + c * W_dec[i]) = pre(x) + c * e_i``: moving along one feature's decoder row
    changes that feature's pre-activation only, so "set feature i" is exactly representable.
    """
    sae = SparseAutoencoder(D_IN, 6, _info(), activation="relu")
    q, _ = torch.linalg.qr(torch.randn(D_IN, 6, generator=_gen(2)))
    with torch.no_grad():
        sae.W_dec.copy_(q.T)
        sae.W_enc.copy_(q)
        sae.b_enc.fill_(10.0)  # every feature active on the test inputs
        sae.b_dec.copy_(torch.randn(D_IN, generator=_gen(3)) * 0.1)
        sae.feature_scale.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0]))
    return sae


def _random_sae(activation: str = "relu", k: int | None = None) -> SparseAutoencoder:
    torch.manual_seed(4)
    sae = SparseAutoencoder(D_IN, 24, _info(), activation=activation, k=k)
    with torch.no_grad():
        sae.W_enc.add_(torch.randn(D_IN, 24, generator=_gen(5)) * 0.3)
        sae.b_enc.copy_(torch.randn(24, generator=_gen(6)))
        sae.b_dec.copy_(torch.randn(D_IN, generator=_gen(7)) * 0.2)
        sae.feature_scale.copy_(torch.rand(24, generator=_gen(8)) + 0.5)
    return sae


@pytest.mark.parametrize(("feature", "value"), [(1, 1.0), (4, 2.0), (2, 0.0)])
def test_clamp_sae_sets_the_feature_to_its_target(x, feature, value):
    sae = _orthogonal_relu_sae()
    f = sae.encode(x)
    assert (f > 0).all()
    target = value * float(sae.scales[feature])
    y = make_clamp(sae, feature, {"value": value}).apply(x, 1.0)
    g = sae.encode(y)
    assert torch.allclose(g[..., feature], torch.full((2, 5), target), atol=1e-4)
    others = [i for i in range(6) if i != feature]
    assert torch.allclose(g[..., others], f[..., others], atol=1e-4)
    # the reconstruction error x - decode(encode(x)) is kept
    assert torch.allclose(y - sae.decode(g), x - sae.decode(f), atol=1e-4)


@pytest.mark.parametrize(("activation", "k"), [("relu", None), ("topk", 6), ("jumprelu", None)])
def test_clamp_sae_adds_decode_clamped_minus_decode_original(x, activation, k):
    """For any SAE: ``y = x + decode(f with f_i = target) - decode(f)``, ``f = encode(x)``.

    So ``y - decode(f_clamped) == x - decode(f)``: the reconstruction error is kept exactly.
    """
    sae = _random_sae(activation, k)
    feature = 3
    f = sae.encode(x)
    clamped = f.clone()
    clamped[..., feature] = 1.5 * float(sae.scales[feature])
    y = make_clamp(sae, feature, {"value": 1.5}).apply(x, 1.0)
    assert torch.allclose(y, x + sae.decode(clamped) - sae.decode(f), atol=1e-4)
    assert torch.allclose(y - sae.decode(clamped), x - sae.decode(f), atol=1e-4)


def test_clamp_sae_blends_with_w(x):
    sae = _orthogonal_relu_sae()
    f = sae.encode(x)
    y = make_clamp(sae, 0, {}).apply(x, 0.25)
    target = float(sae.scales[0])
    assert torch.allclose(sae.encode(y)[..., 0], 0.75 * f[..., 0] + 0.25 * target, atol=1e-4)


@pytest.mark.parametrize("make", [make_add, make_ablate, make_scale])
def test_unknown_options_error_listing_none_allowed(dirs, make):
    with pytest.raises(ValueError, match=r"'strength'.*allowed: none"):
        make(dirs, 0, {"strength": 2})


def test_clamp_unknown_option_lists_value(dirs):
    with pytest.raises(ValueError, match=r"\['valeu'\].*allowed: \['value'\]"):
        make_clamp(dirs, 0, {"valeu": 2})


def test_interventions_follow_the_activation_dtype(dirs, x):
    xh = x.to(torch.float16)
    for make in (make_add, make_ablate, make_scale, make_clamp):
        y = make(dirs, 0, {}).apply(xh, torch.ones(2, 5, 1, dtype=torch.float16))
        assert y.dtype == torch.float16 and y.shape == xh.shape
