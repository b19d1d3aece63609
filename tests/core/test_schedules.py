"""Schedules: envelopes over progress and position masks over ``(B, P, C)`` activations."""

from __future__ import annotations

import math

import pytest
import torch

from polysteer.steering.schedules import (
    BUILTIN_ENVELOPES,
    BUILTIN_MASKS,
    Constant,
    Decay,
    Ramp,
    Window,
    mask_all,
    mask_generated,
    mask_prompt,
    mask_region,
    mask_span,
    piecewise,
)
from polysteer.steering.step import Step

CPU = torch.device("cpu")
NAN, INF = math.nan, math.inf


def test_builtin_names():
    assert set(BUILTIN_ENVELOPES) == {"constant", "ramp", "window", "decay", "piecewise"}
    assert set(BUILTIN_MASKS) == {"all", "prompt", "generated", "span", "region"}


def test_constant():
    assert Constant()(0.0) == 1.0 and Constant()(1.0) == 1.0
    assert Constant(0.3)(0.7) == 0.3


def test_ramp_values():
    r = Ramp(start=0.2, end=0.6)
    assert [r(p) for p in (0.0, 0.2)] == [0.0, 0.0]
    assert r(0.4) == pytest.approx(0.5)
    assert [r(p) for p in (0.6, 1.0)] == [1.0, 1.0]
    down = Ramp(start_value=2.0, end_value=0.0)
    assert (down(0.0), down(0.25), down(1.0)) == (2.0, pytest.approx(1.5), 0.0)
    step = Ramp(start=0.5, end=0.5)  # a step function, no division by zero
    assert (step(0.4), step(0.5), step(0.6)) == (0.0, 0.0, 1.0)


def test_window_values_inclusive_edges():
    w = Window(start=0.25, end=0.5, value=2.0)
    assert [w(p) for p in (0.0, 0.24, 0.25, 0.4, 0.5, 0.51, 1.0)] == [0, 0, 2.0, 2.0, 2.0, 0, 0]


def test_decay_halves_every_half_life():
    d = Decay(half_life=0.25, value=4.0)
    assert d(0.0) == 4.0
    assert d(0.25) == pytest.approx(2.0)
    assert d(0.5) == pytest.approx(1.0)
    assert d(1.0) == pytest.approx(0.25)


def test_piecewise_interpolates_and_holds_flat_outside():
    p = piecewise([[0.2, 1.0], [0.6, 3.0], [0.8, 0.0]])
    assert p(0.0) == 1.0 and p(0.2) == 1.0
    assert p(0.4) == pytest.approx(2.0)
    assert p(0.6) == pytest.approx(3.0)
    assert p(0.7) == pytest.approx(1.5)
    assert p(0.8) == 0.0 and p(1.0) == 0.0
    assert piecewise([[0.5, 7.0]])(0.1) == 7.0


@pytest.mark.parametrize("make", [
    lambda: Ramp(start=0.7, end=0.3),
    lambda: Window(start=0.9, end=0.1),
    lambda: mask_span(0.8, 0.2),
])
def test_start_after_end_errors(make):
    with pytest.raises(ValueError, match="must not exceed"):
        make()


@pytest.mark.parametrize("make", [
    lambda: Ramp(start=-0.1),
    lambda: Ramp(end=1.5),
    lambda: Window(end=2.0),
    lambda: Window(start=NAN),
    lambda: Ramp(end=NAN),
    lambda: mask_span(NAN, 1.0),
    lambda: mask_span(0.0, 1.2),
    lambda: mask_region(top=-0.5),
    lambda: mask_region(right=NAN),
    lambda: piecewise([[-0.1, 1.0]]),
    lambda: piecewise([[0.0, 1.0], [1.5, 1.0]]),
])
def test_fractions_outside_unit_interval_or_nan_error(make):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make()


@pytest.mark.parametrize("make", [lambda: Decay(half_life=0), lambda: Decay(half_life=-1),
                                  lambda: Decay(half_life=NAN)])
def test_decay_needs_positive_half_life(make):
    with pytest.raises(ValueError, match="half_life"):
        make()


def test_piecewise_unsorted_or_empty_errors():
    with pytest.raises(ValueError, match="sorted"):
        piecewise([[0.5, 1.0], [0.2, 0.0]])
    with pytest.raises(ValueError, match="at least one"):
        piecewise([])


@pytest.mark.parametrize("make", [
    lambda: Constant(NAN),
    lambda: Constant(INF),
    lambda: Window(value=NAN),
    lambda: Ramp(end_value=INF),
    lambda: Decay(value=NAN),
    lambda: piecewise([[0.0, 1.0], [1.0, NAN]]),
], ids=["constant-nan", "constant-inf", "window-nan", "ramp-inf", "decay-nan", "piecewise-nan"])
def test_non_finite_envelope_values_error(make):
    """A NaN multiplier would turn every steered activation into NaN: refuse it up front."""
    with pytest.raises(ValueError):
        make()


# -- position masks -------------------------------------------------------------------------------
def _step(offset: int, new: int, prompt_length: int) -> Step:
    return Step(index=1, progress=0.5, phase="decode", offset=offset, new=new,
                prompt_length=prompt_length)


def test_mask_all_is_none():
    assert mask_all()(_step(0, 4, 4), 4, None, CPU) is None


def test_prompt_and_generated_in_the_prefill():
    step = Step(0, 0.0, "prefill", offset=0, new=6, prompt_length=6)
    assert mask_prompt()(step, 6, None, CPU).tolist() == [True] * 6
    assert mask_generated()(step, 6, None, CPU).tolist() == [False] * 6


def test_prompt_and_generated_under_a_kv_cache():
    """A decode step under a KV cache holds one position at offset = tokens so far."""
    step = _step(offset=9, new=1, prompt_length=6)
    assert mask_prompt()(step, 1, None, CPU).tolist() == [False]
    assert mask_generated()(step, 1, None, CPU).tolist() == [True]


def test_prompt_and_generated_without_a_cache():
    """Without a cache a decode step sees the whole sequence again."""
    step = _step(offset=0, new=1, prompt_length=4)
    assert mask_prompt()(step, 7, None, CPU).tolist() == [True] * 4 + [False] * 3
    assert mask_generated()(step, 7, None, CPU).tolist() == [False] * 4 + [True] * 3


def test_prompt_mask_with_an_offset_inside_the_prompt():
    step = _step(offset=3, new=4, prompt_length=5)
    assert mask_prompt()(step, 4, None, CPU).tolist() == [True, True, False, False]


def test_span_fractions():
    step = Step(0, 0.0, "single", new=10, prompt_length=10)
    assert mask_span(0.5, 1.0)(step, 10, None, CPU).tolist() == [False] * 5 + [True] * 5
    assert mask_span(0.0, 0.3)(step, 10, None, CPU).tolist() == [True] * 3 + [False] * 7
    assert mask_span()(step, 10, None, CPU).all()
    assert mask_span(0.3, 0.7)(step, 10, None, CPU).nonzero().flatten().tolist() == [3, 4, 5, 6]


def test_region_on_a_4x4_grid():
    step = Step(0, 0.0, "denoise", new=16)
    m = mask_region(top=0.0, bottom=0.5, left=0.5, right=1.0)(step, 16, (4, 4), CPU)
    assert m.shape == (16,) and m.dtype == torch.bool
    assert m.nonzero().flatten().tolist() == [2, 3, 6, 7]  # rows 0-1, columns 2-3, row-major
    full = mask_region()(step, 16, (4, 4), CPU)
    assert full.all()


def test_region_on_a_non_square_grid_is_row_major():
    step = Step(0, 0.0, "denoise", new=8)
    m = mask_region(top=0.5, bottom=1.0, left=0.0, right=0.25)(step, 8, (2, 4), CPU)
    assert m.nonzero().flatten().tolist() == [4]  # row 1, column 0


def test_region_on_a_sequence_site_errors():
    with pytest.raises(ValueError, match="span"):
        mask_region(top=0.5)(_step(0, 5, 5), 5, None, CPU)


def test_region_top_after_bottom_errors():
    with pytest.raises(ValueError):
        mask_region(top=0.8, bottom=0.2)
