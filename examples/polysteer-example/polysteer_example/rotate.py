"""The ``rotate`` intervention: turn the activation towards a feature without changing its norm.

For an activation ``x`` and a feature's unit direction ``d``, write ``x = a d + r u`` where
``a = x . d`` and ``r u`` is the part of ``x`` orthogonal to ``d`` (``u`` a unit vector). ``rotate``
turns ``x`` by an angle ``theta`` within the plane spanned by ``d`` and ``u``, towards ``d`` for
``theta > 0`` and away from it for ``theta < 0``::

    a' = a cos(theta) + r sin(theta)        r' = r cos(theta) - a sin(theta)

Every other direction is untouched and the norm is kept, which matters for models without a
normalisation layer (a convolutional audio model's loudness lives in that norm).

Units of the weight ``w`` (intensity x weight x schedule x mask, see polysteer's interventions):

* default: ``theta = w * angle(x, d)``, so ``w = 1`` turns each position fully onto the feature
  direction, ``w = 0.5`` halfway, and ``w = -1`` as far away again; like the built-in kinds, 1.0
  means the same thing on every model;
* option ``degrees``: ``theta = w * degrees``, a fixed angle per unit weight.

``w == 0`` leaves ``x`` bit-identical (also per row and per position), and a position lying
exactly on the feature axis has no plane to turn in and is left as it is.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from polysteer import FeatureDictionary

OPTIONS = ("degrees",)


class _PerDevice:
    """One copy of a vector per (device, dtype), so the per-step path never converts it."""

    def __init__(self, vector: torch.Tensor):
        self._vector = vector.detach()
        self._copies: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def like(self, x: torch.Tensor) -> torch.Tensor:
        """The vector on ``x``'s device, in ``x``'s dtype."""
        key = (x.device, x.dtype)
        if key not in self._copies:
            self._copies[key] = self._vector.to(device=x.device, dtype=x.dtype)
        return self._copies[key]


class Rotate:
    """A compiled ``rotate``: see the module docstring.

    Args:
        direction: the feature's direction ``(C,)`` (normalised here).
        radians: fixed angle per unit weight, or ``None`` for "``w = 1`` aligns with the feature".
    """

    def __init__(self, direction: torch.Tensor, radians: float | None = None):
        direction = direction.detach().float()
        norm = direction.norm()
        if not torch.isfinite(direction).all() or norm == 0:
            raise ValueError("rotate needs a finite, non-zero feature direction")
        self.direction = _PerDevice(direction / norm)
        self.radians = radians

    def apply(self, x: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
        """Rotate ``x`` ``(B, P, C)`` by weights ``w`` broadcastable to ``(B, P, 1)``."""
        d = self.direction.like(x)
        w = torch.as_tensor(w, dtype=x.dtype, device=x.device)
        w = w[..., 0] if w.ndim else w  # weights are (..., 1): drop the channel axis
        a = x @ d
        ortho = x - a[..., None] * d
        r = ortho.norm(dim=-1)
        angle = torch.atan2(r, a) if self.radians is None else torch.full_like(a, self.radians)
        theta = torch.where(r > 0, w * angle, torch.zeros_like(a))
        # a' - a and r' - r written with sin^2(theta/2) = (1 - cos theta) / 2 so that both are
        # exactly 0 at theta = 0 and accurate for small angles (no cancellation in cos - 1)
        sin, half = torch.sin(theta), torch.sin(theta / 2)
        versine = 2 * half * half
        delta_a = r * sin - a * versine
        delta_r = -(a * sin + r * versine)
        u = ortho / r.clamp_min(torch.finfo(x.dtype).tiny)[..., None]
        y = x + delta_a[..., None] * d + delta_r[..., None] * u
        # where the weight is 0 the contract is "bit-identical", not "equal up to rounding"
        return torch.where((w == 0)[..., None], x, y)


def make_rotate(dictionary: FeatureDictionary, feature: int, options: dict[str, Any]) -> Rotate:
    """``rotate``: turn the activation towards the feature, keeping its norm (option ``degrees``)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"intervention 'rotate' takes no option(s) {unknown}; allowed: {list(OPTIONS)}")
    radians = None
    if options.get("degrees") is not None:
        degrees = options["degrees"]
        if isinstance(degrees, bool) or not isinstance(degrees, int | float) or not math.isfinite(degrees):
            raise ValueError(f"rotate option 'degrees' must be a finite number, got {degrees!r}")
        radians = math.radians(degrees)
    return Rotate(dictionary.directions[feature], radians)
