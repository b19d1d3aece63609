"""Interventions: what happens to the activation at a site.

Each kind is a factory registered under a name (``add``, ``clamp``, ``ablate``, ``scale``; plugins
may add more). When a steering context opens, the factory is called once per component with the
dictionary, the feature index and the component's options, and returns an :class:`Intervention`
whose ``apply(x, w)`` is plain tensor code: ``x`` is ``(B, P, C)`` and ``w`` the per-row,
per-position weight ``(B, P, 1)`` (intensity x weight x schedule x mask). ``w == 0`` leaves ``x``
unchanged, which is what makes zero intensity an exact no-op.

Units: ``add`` moves ``w x site_norm`` along the feature's unit direction, so 1.0 means "one typical
token norm" on every model and modality. ``clamp`` sets the feature to ``value x scale`` (its
typical firing value), blending with ``w``. ``ablate`` removes ``w`` of the feature's component
(``w = 1`` projects it out). ``scale`` multiplies the feature's component by ``1 + w``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from polysteer.features.dictionary import FeatureDictionary, SparseAutoencoder


class Intervention(Protocol):
    """A compiled intervention: ``apply`` maps ``(B, P, C)`` activations and weights to new ones."""

    def apply(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Return the changed activation; ``w`` is ``(B, P, 1)`` (or broadcastable)."""


class InterventionFactory(Protocol):
    """Builds an :class:`Intervention` for one feature of one dictionary."""

    def __call__(self, dictionary: FeatureDictionary, feature: int,
                 options: dict[str, Any]) -> Intervention: ...


class PerDevice:
    """Keeps one copy of a vector per (device, dtype), so the hot path never converts.

    For plugin authors writing an intervention: build it once in the factory, call ``.on(x)``
    in ``apply``.
    """

    def __init__(self, vector: torch.Tensor):
        self._vector = vector.detach()
        self._cache: dict[tuple, torch.Tensor] = {}

    def on(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self._vector.to(device=x.device, dtype=x.dtype)
        return v


def check_options(kind: str, options: dict[str, Any], allowed: tuple[str, ...] = ()) -> None:
    """Raise a clear error for options an intervention kind does not take."""
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"intervention {kind!r} takes no option(s) {sorted(unknown)}; "
                         f"allowed: {list(allowed) or 'none'}")


@dataclass
class Add:
    """``x + w * site_norm * direction``."""

    vector: PerDevice

    def apply(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x + w * self.vector.on(x)


@dataclass
class ScaleComponent:
    """``x + w * (x . d) d``: scale the component along ``d`` by ``1 + w`` (``-1`` removes it)."""

    direction: PerDevice
    sign: float = 1.0

    def apply(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        d = self.direction.on(x)
        return x + (self.sign * w) * (x @ d)[..., None] * d


@dataclass
class ClampDirection:
    """Set the projection on ``d`` to ``target``: ``x + w * (target - x . d) d``."""

    direction: PerDevice
    target: float

    def apply(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        d = self.direction.on(x)
        return x + w * (self.target - x @ d)[..., None] * d


@dataclass
class ClampSAE:
    """Set SAE feature ``i`` to ``target``, keeping the reconstruction error.

    Adds ``decode(f_clamped) - decode(f)``; the decoder is linear, so that is
    ``(target - f_i) * W_dec[i]``. Features the TopK selection would change are left as they are.
    """

    sae: SparseAutoencoder
    index: int
    target: float
    row: PerDevice

    def apply(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        f_i = self.sae.encode(x)[..., self.index]
        return x + w * (self.target - f_i)[..., None] * self.row.on(x)


def make_add(dictionary: FeatureDictionary, feature: int, options: dict[str, Any]) -> Add:
    """``add``: push along the feature's direction by ``w`` site norms."""
    check_options("add", options)
    return Add(PerDevice(dictionary.directions[feature] * dictionary.info.site_norm))


def make_ablate(dictionary: FeatureDictionary, feature: int, options: dict[str, Any]
                ) -> ScaleComponent:
    """``ablate``: remove ``w`` of the feature's component (``w = 1``: project it out)."""
    check_options("ablate", options)
    return ScaleComponent(PerDevice(dictionary.directions[feature]), sign=-1.0)


def make_scale(dictionary: FeatureDictionary, feature: int, options: dict[str, Any]
               ) -> ScaleComponent:
    """``scale``: multiply the feature's component by ``1 + w``."""
    check_options("scale", options)
    return ScaleComponent(PerDevice(dictionary.directions[feature]))


def make_clamp(dictionary: FeatureDictionary, feature: int, options: dict[str, Any]):
    """``clamp``: set the feature to ``value`` times its typical firing value (default 1)."""
    check_options("clamp", options, ("value",))
    value = float(options.get("value", 1.0))
    target = value * float(dictionary.scales[feature])
    if isinstance(dictionary, SparseAutoencoder):
        return ClampSAE(dictionary, feature, target, PerDevice(dictionary.W_dec[feature]))
    return ClampDirection(PerDevice(dictionary.directions[feature]), target)


BUILTIN_INTERVENTIONS: dict[str, InterventionFactory] = {
    "add": make_add, "clamp": make_clamp, "ablate": make_ablate, "scale": make_scale,
}
