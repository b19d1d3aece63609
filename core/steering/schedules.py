"""Schedules: when and how hard a component applies.

An *envelope* maps generation ``progress`` in [0, 1] to a multiplier (constant, ramp, window,
decay, piecewise). A *position mask* picks which positions of the ``(B, P, C)`` activation a
component touches (all, the prompt, the generated part, a span, an image region). Both are
registered by kind, built once when a steering context opens, and called with the current
:class:`~polysteer.steering.step.Step` only: that is what makes them modality-agnostic.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from polysteer.io.safeload import quoted_hint
from polysteer.steering.step import Step

Envelope = Callable[[float], float]
"""``envelope(progress) -> multiplier``."""

PositionMask = Callable[[Step, int, "tuple[int, int] | None", torch.device], "torch.Tensor | None"]
"""``mask(step, positions, grid, device) -> bool (positions,)`` or ``None`` for every position."""


MAX_MULTIPLIER = 1000.0
"""Largest magnitude an envelope value may have (larger ones overflow half-precision models)."""


def _real(name: str, value: Any) -> float:
    """``value`` as a float if it is a real number: a quoted ``'2'`` or ``true`` is refused here,
    when the schedule is built, and never meets a forward hook."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}{quoted_hint(value)}")
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _finite(name: str, value: Any) -> float:
    v = _real(name, value)
    if not math.isfinite(v) or abs(v) > MAX_MULTIPLIER:
        raise ValueError(f"{name} must be a finite number of magnitude at most "
                         f"{MAX_MULTIPLIER:g}, got {value!r}")
    return v


def _fraction(name: str, value: Any) -> float:
    v = _real(name, value)
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return v


@dataclass(frozen=True)
class Constant:
    """Always ``value``."""

    value: float = 1.0

    def __post_init__(self) -> None:
        _finite("constant value", self.value)

    def __call__(self, progress: float) -> float:
        return self.value


@dataclass(frozen=True)
class Ramp:
    """Linear from ``start_value`` at ``progress <= start`` to ``end_value`` at ``>= end``."""

    start: float = 0.0
    end: float = 1.0
    start_value: float = 0.0
    end_value: float = 1.0

    def __post_init__(self) -> None:
        if not _fraction("start", self.start) <= _fraction("end", self.end):
            raise ValueError(f"ramp start ({self.start}) must not exceed end ({self.end})")
        _finite("ramp start_value", self.start_value), _finite("ramp end_value", self.end_value)

    def __call__(self, progress: float) -> float:
        if progress <= self.start:
            return self.start_value
        if progress >= self.end:
            return self.end_value
        t = (progress - self.start) / (self.end - self.start)
        return self.start_value + t * (self.end_value - self.start_value)


@dataclass(frozen=True)
class Window:
    """``value`` while ``start <= progress <= end``, else 0: e.g. only the first 40% of steps."""

    start: float = 0.0
    end: float = 1.0
    value: float = 1.0

    def __post_init__(self) -> None:
        if not _fraction("start", self.start) <= _fraction("end", self.end):
            raise ValueError(f"window start ({self.start}) must not exceed end ({self.end})")
        _finite("window value", self.value)

    def __call__(self, progress: float) -> float:
        return self.value if self.start <= progress <= self.end else 0.0


@dataclass(frozen=True)
class Decay:
    """Exponential decay from ``value``, halving every ``half_life`` of progress."""

    half_life: float = 0.25
    value: float = 1.0

    def __post_init__(self) -> None:
        if not _finite("decay half_life", self.half_life) > 0:
            raise ValueError(f"decay half_life must be > 0, got {self.half_life}")
        _finite("decay value", self.value)

    def __call__(self, progress: float) -> float:
        return self.value * 0.5 ** (progress / self.half_life)


@dataclass(frozen=True)
class Piecewise:
    """Linear interpolation through ``points`` ``[[progress, value], ...]`` (held flat outside)."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not all(isinstance(pair, list | tuple) and len(pair) == 2 for pair in self.points):
            raise ValueError("piecewise points must be [progress, value] pairs")
        pts = tuple((_fraction("piecewise point", p), _finite("piecewise value", v))
                    for p, v in self.points)
        if not pts or [p for p, _ in pts] != sorted(p for p, _ in pts):
            raise ValueError("piecewise needs at least one [progress, value] point, sorted by progress")
        for p, v in pts:
            _fraction("piecewise point", p), _finite("piecewise value", v)
        object.__setattr__(self, "points", pts)

    def __call__(self, progress: float) -> float:
        xs = [p for p, _ in self.points]
        i = bisect.bisect_right(xs, progress)
        if i == 0:
            return self.points[0][1]
        if i == len(xs):
            return self.points[-1][1]
        (x0, y0), (x1, y1) = self.points[i - 1], self.points[i]
        return y0 + (progress - x0) / (x1 - x0) * (y1 - y0)


def piecewise(points: list) -> Piecewise:
    """Factory taking a list of ``[progress, value]`` pairs."""
    return Piecewise(tuple(tuple(p) for p in points))


BUILTIN_ENVELOPES: dict[str, Callable[..., Envelope]] = {
    "constant": Constant, "ramp": Ramp, "window": Window, "decay": Decay, "piecewise": piecewise,
}


# -- position masks -----------------------------------------------------------------------------
def _absolute(step: Step, positions: int, device: torch.device) -> torch.Tensor:
    return torch.arange(step.offset, step.offset + positions, device=device)


def mask_all() -> PositionMask:
    """Every position."""
    return lambda step, positions, grid, device: None


def mask_prompt() -> PositionMask:
    """Positions of the prompt (absolute position < the step's ``prompt_length``)."""
    return lambda step, n, grid, device: _absolute(step, n, device) < step.prompt_length


def mask_generated() -> PositionMask:
    """Positions produced by generation (absolute position >= ``prompt_length``)."""
    return lambda step, n, grid, device: _absolute(step, n, device) >= step.prompt_length


def _cached(build: Callable[[int, Any, torch.device], torch.Tensor]) -> PositionMask:
    """A step-independent mask built once per (positions, grid, device), not on every forward pass."""
    cache: dict[tuple, torch.Tensor] = {}

    def mask(step: Step, n: int, grid, device) -> torch.Tensor:
        key = (n, tuple(grid) if grid is not None else None, str(device))
        if key not in cache:
            cache[key] = build(n, grid, device)
        return cache[key]
    return mask


def mask_span(start: float = 0.0, end: float = 1.0) -> PositionMask:
    """A fraction of the position axis, e.g. ``start=0.66`` for the last third of an utterance."""
    if not _fraction("start", start) <= _fraction("end", end):
        raise ValueError(f"span start ({start}) must not exceed end ({end})")

    def build(n: int, grid, device) -> torch.Tensor:
        rel = (torch.arange(n, device=device) + 0.5) / n
        return (rel >= start) & (rel <= end)
    return _cached(build)


def mask_region(top: float = 0.0, bottom: float = 1.0, left: float = 0.0, right: float = 1.0
                ) -> PositionMask:
    """A rectangle of an image site's ``(H, W)`` grid, in fractions of height and width."""
    if not (_fraction("top", top) <= _fraction("bottom", bottom)
            and _fraction("left", left) <= _fraction("right", right)):
        raise ValueError(f"region needs top <= bottom and left <= right, got top={top}, "
                         f"bottom={bottom}, left={left}, right={right}")

    def build(n: int, grid, device) -> torch.Tensor:
        if grid is None:
            raise ValueError("a 'region' mask needs a spatial site (an image block); this site "
                             "has a sequence of positions: use 'span' instead")
        h, w = grid
        ys = (torch.arange(h, device=device) + 0.5) / h
        xs = (torch.arange(w, device=device) + 0.5) / w
        rows = (ys >= top) & (ys <= bottom)
        cols = (xs >= left) & (xs <= right)
        return (rows[:, None] & cols[None, :]).reshape(-1)
    mask = _cached(build)
    mask.needs_grid = True  # the runtime checks this against the site's layout when a style opens
    return mask


BUILTIN_MASKS: dict[str, Callable[..., PositionMask]] = {
    "all": mask_all, "prompt": mask_prompt, "generated": mask_generated, "span": mask_span,
    "region": mask_region,
}
