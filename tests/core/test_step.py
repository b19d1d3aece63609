"""The step clock and row maps: what schedules and rules see of a generation."""

from __future__ import annotations

import math

import pytest
import torch

import polysteer
from polysteer.steering.step import PHASES, Phase, RowMap, Step, StepClock


def test_rowmap_plain():
    rows = RowMap.plain(3)
    assert rows.sample.tolist() == [0, 1, 2]
    assert rows.branch == ("cond", "cond", "cond")
    assert rows.rows == 3 and rows.samples == 3
    assert rows.branch_mask(("cond",)).tolist() == [True, True, True]
    assert rows.branch_mask(("uncond",)).tolist() == [False, False, False]


def test_rowmap_cfg_uncond_first_and_cond_first():
    rows = RowMap.cfg(2)
    assert rows.sample.tolist() == [0, 1, 0, 1]
    assert rows.branch == ("uncond", "uncond", "cond", "cond")
    assert rows.rows == 4 and rows.samples == 2
    assert rows.branch_mask(("cond",)).tolist() == [False, False, True, True]
    assert rows.branch_mask(("uncond",)).tolist() == [True, True, False, False]
    assert rows.branch_mask(("cond", "uncond")).all()

    rows = RowMap.cfg(2, uncond_first=False)
    assert rows.sample.tolist() == [0, 1, 0, 1]
    assert rows.branch == ("cond", "cond", "uncond", "uncond")
    assert rows.branch_mask(("cond",)).tolist() == [True, True, False, False]


def test_rowmap_beams_are_consecutive_rows():
    rows = RowMap.beams(2, 3)
    assert rows.sample.tolist() == [0, 0, 0, 1, 1, 1]
    assert rows.rows == 6 and rows.samples == 2
    assert rows.branch_mask(("cond",)).all()


def test_rowmaps_built_alike_are_the_same_mapping():
    assert RowMap.cfg(2).same_as(RowMap.cfg(2))
    assert not RowMap.cfg(2).same_as(RowMap.cfg(2, uncond_first=False))
    assert not RowMap.plain(4).same_as(RowMap.beams(2, 2)) and not RowMap.plain(2).same_as(None)


def test_rowmap_branch_mask_is_bool_tensor():
    mask = RowMap.cfg(1).branch_mask(("cond",))
    assert mask.dtype == torch.bool and mask.shape == (2,)


def test_clock_progress_is_index_over_total_minus_one():
    clock = StepClock()
    clock.begin(5)
    steps = [clock.advance(phase="prefill" if i == 0 else "decode") for i in range(5)]
    assert [s.index for s in steps] == [0, 1, 2, 3, 4]
    assert [s.progress for s in steps] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert clock.current is steps[-1]


def test_clock_progress_never_exceeds_one():
    clock = StepClock()
    clock.begin(2)
    clock.advance(phase="prefill")
    clock.advance(phase="decode")
    extra = clock.advance(phase="decode")  # an adapter that ran one pass more than announced
    assert extra.index == 2 and extra.progress == 1.0


@pytest.mark.parametrize("total", [None, 1, 0])
def test_clock_unknown_or_single_step_total_gives_progress_zero(total):
    clock = StepClock()
    clock.begin(total)
    a = clock.advance(phase="single")
    b = clock.advance(phase="single")
    assert (a.index, b.index) == (0, 1)
    assert a.progress == 0.0 and b.progress == 0.0


def test_clock_explicit_index_and_progress_win():
    clock = StepClock()
    clock.begin(10)
    step = clock.advance(phase="denoise", index=7, progress=0.3)
    assert (step.index, step.progress) == (7, 0.3)
    assert clock.advance(phase="denoise").index == 8


def test_clock_begin_restarts_the_index_and_every_generation_is_recorded():
    clock = StepClock()
    clock.begin(3)
    rows = RowMap.cfg(2)
    first = clock.advance(phase="prefill", offset=0, new=6, prompt_length=6, rows=rows)
    clock.advance(phase="decode", offset=6, new=1, prompt_length=6, rows=rows)
    assert first.rows is rows and first.new == 6 and first.prompt_length == 6
    clock.begin(2)
    assert clock.current is None
    again = clock.advance(phase="prefill")
    assert again.index == 0 and again.progress == 0.0
    assert [[(s.index, s.phase) for s in g] for g in clock.generations] == [
        [(0, "prefill"), (1, "decode")], [(0, "prefill")]]
    assert clock.generations[0][1].offset == 6 and clock.generations[0][1].new == 1
    assert clock.history == clock.generations[-1]  # history is the latest generation
    # the default row map is one plain row
    assert again.rows.rows == 1


def test_clock_listeners_see_every_step_in_order():
    clock = StepClock()
    seen_a, seen_b = [], []
    clock.on_advance(seen_a.append)
    clock.on_advance(lambda step: seen_b.append((step.index, clock.current is step)))
    clock.begin(3)
    steps = [clock.advance(phase="denoise") for _ in range(3)]
    assert seen_a == steps
    assert seen_b == [(0, True), (1, True), (2, True)]


def test_step_validation():
    for phase in PHASES:
        Step(0, 0.5, phase)
    with pytest.raises(ValueError, match="phase name"):
        Step(0, 0.0, "")
    for progress in (-0.01, 1.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="progress"):
            Step(0, progress, "decode")
    Step(0, 0.0, "decode")
    Step(0, 1.0, "decode")


def test_clock_advance_validates_phase():
    clock = StepClock()
    clock.begin(2)
    with pytest.raises(ValueError, match="phase"):
        clock.advance(phase="sampling")


def test_clock_without_begin_still_records_a_generation():
    clock = StepClock()
    clock.advance(phase="single")
    clock.advance(phase="single")
    assert [s.index for s in clock.history] == [0, 1]
    assert len(clock.generations) == 1


def test_step_real_positions_mark_left_padding_and_skip_when_none_is_reached():
    step = Step(index=0, progress=0.0, phase="prefill", new=4, prompt_length=4, rows=RowMap.plain(2),
                padding=torch.tensor([0, 2]))
    assert step.real_positions(4, 4).tolist() == [[True] * 4, [False, False, True, True]]
    assert step.real_positions(2, 4) is None  # the last two positions are past every row's padding
    decode = Step(index=1, progress=0.1, phase="decode", offset=4, new=1, rows=RowMap.plain(2),
                  padding=torch.tensor([0, 2]))
    assert decode.real_positions(1, 1) is None
    assert Step(index=0, progress=0.0, phase="single").real_positions(3, 3) is None


class _RenderPhasePlugin:
    """A plugin declaring its own kind of forward pass."""

    @polysteer.hookimpl
    def polysteer_register_step_phases(self, registry):
        registry.register("render", Phase("render", extends_sequence=False, description="a re-render"))


def _rendering_adapter():
    from polysteer.models.reference import ReferenceAdapter, ReferenceConfig, ReferenceLM

    class Rendering(ReferenceAdapter):
        def run_generation(self, inputs, passes: int = 3):
            ids = torch.as_tensor(inputs)
            self.begin_generation(passes)
            for _ in range(passes):  # every pass sees the same positions again
                self.advance_step(phase="render", new=ids.shape[1], prompt_length=ids.shape[1],
                                  rows=RowMap.plain(len(ids)))
                self.model(ids, None, 0)
            return ids

    return Rendering(ReferenceLM(ReferenceConfig()))


def test_a_plugin_declares_its_own_step_phase(register_plugin):
    adapter = _rendering_adapter()
    site = "blocks.0.resid_post"
    with pytest.raises(ValueError, match="unknown step phase 'render'.*polysteer_register_step_phases"):
        with polysteer.steer(adapter, None, capture=[site]):
            adapter.generate([[1, 2, 3]])
    register_plugin(_RenderPhasePlugin(), "render-phase")
    with polysteer.steer(adapter, None, capture=[site]) as run:
        adapter.generate([[1, 2, 3]])
    assert [s.phase for s in run.clock.history] == ["render"] * 3
    assert run.captured(site).shape == (3, 1, 3, 32)  # not a growing sequence: stacked per pass
