"""Calibrations: the sweep, the choice of range, the stored file and what it does at steer time."""

from __future__ import annotations

import json

import pytest
import torch

from polysteer.errors import ConfigError, CorruptFileError
from polysteer.features.concepts import direction_set, median_norm
from polysteer.models.reference import ReferenceAdapter, ReferenceConfig, ReferenceLM, reference_prompts
from polysteer.steering.calibration import (
    Calibration,
    find_calibration,
    load_calibration,
    raw_intensities,
    user_calibration_path,
)
from polysteer.steering.runtime import steer
from polysteer.steering.style import Component, Style
from polysteer.workflows.calibrate import calibrate, calibration_for, choose_range, plot_calibration

SITE = "blocks.1.resid_post"
TOKEN = 7


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("POLYSTEER_CALIBRATION", raising=False)
    return tmp_path / "home"


@pytest.fixture
def adapter(plugin_manager):
    return ReferenceAdapter()


def _style(adapter: ReferenceAdapter, name: str = "sevens") -> Style:
    """Adds the unembedding row of token 7 at the last block: more 7s as intensity grows."""
    prompts = reference_prompts(samples=4, length=6)
    with steer(adapter, None, capture=[SITE]) as run:
        adapter.generate(prompts, max_new_tokens=2)
    up = adapter.model.unembed.weight[TOKEN].detach()
    d = direction_set([up], ["sevens"], site=SITE, site_norm=median_norm(run.captured(SITE)),
                      model=adapter.model_fingerprint, method="planted")
    return Style(name=name, components=[Component("sevens", dictionary=d, feature="sevens")])


class SevensJudge:
    """Measures the real output: the share of generated tokens that are 7 (the concept) and the
    share of rows whose generated tokens are all one token (the output collapsed: incoherence)."""

    score_name = "share of 7s"
    coherence_name = "collapsed rows"
    grid = (0.5, 1.0, 2.0, 4.0, 8.0)

    def __init__(self):
        self.prompts = reference_prompts(samples=6, length=6, seed=3)

    def generate(self, adapter):
        return adapter.generate(self.prompts, max_new_tokens=6)

    def measure(self, adapter, generation, baseline):
        new = generation.outputs[:, generation.prompt_length:]
        collapsed = (new == new[:, :1]).all(-1).float().mean()
        return {"score": float((new == TOKEN).float().mean()), "coherence": float(collapsed)}

    def bound(self, baseline):
        return baseline["coherence"] + 0.34

    def describe(self):
        return {"kind": "test"}


def test_choose_range_takes_the_last_coherent_point_before_the_first_failure():
    points = [{"intensity": 0.0, "score": 0.1, "coherence": 0.0},
              {"intensity": 0.5, "score": 0.2, "coherence": 0.0},
              {"intensity": 1.0, "score": 0.5, "coherence": 0.1},
              {"intensity": 2.0, "score": 0.9, "coherence": 0.5},   # past the bound
              {"intensity": 3.0, "score": 0.9, "coherence": 0.1}]   # coherent again: not taken
    high, low, coherent = choose_range(points, bound=0.2)
    assert (high, low, coherent) == (1.0, 1.0, True)
    assert [p["coherent"] for p in points[1:]] == [True, True, False, True]
    high, low, coherent = choose_range([points[0], {"intensity": 0.5, "score": 0.0, "coherence": 1.0}], 0.2)
    assert (high, low, coherent) == (0.5, None, False)


def test_calibrate_sweeps_measures_and_chooses_on_the_reference_model(adapter, home):
    style = _style(adapter)
    cal = calibrate(adapter, style, judge=SevensJudge(), stop_after=0, progress=False)
    scores = [p["score"] for p in cal.points]
    assert [p["intensity"] for p in cal.points] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert scores[-1] > scores[0]  # the planted direction makes 7s
    assert cal.points[-1]["coherence"] > cal.bound  # at 8 the rows collapse onto 7
    assert cal.high in (0.5, 1.0, 2.0, 4.0) and cal.coherent
    assert all(p["coherence"] <= cal.bound for p in cal.points[1:] if p["intensity"] <= cal.high)
    assert cal.low is None or cal.low <= cal.high
    assert cal.model.matches(adapter.model_fingerprint) and cal.modality == "text"
    path = cal.save()
    assert path == user_calibration_path("sevens", adapter.model_fingerprint)
    assert load_calibration(path).to_json() == json.loads(path.read_text())
    assert calibration_for(style, adapter)["high"] == cal.high
    assert calibration_for("other-style", adapter) is None


def _generate_capture(adapter, style, intensity):
    prompts = reference_prompts(samples=2, length=6, seed=5)
    with steer(adapter, style, intensity=intensity, capture=[SITE]) as run:
        out = adapter.generate(prompts, max_new_tokens=4).outputs
    return out, run


def test_a_stored_calibration_scales_intensity_and_zero_stays_bit_exact(adapter, home):
    style = _style(adapter)
    plain, _ = _generate_capture(adapter, None, 0.0)
    with raw_intensities():
        raw_two, _ = _generate_capture(adapter, style, 2.0)
    Calibration(style="sevens", model=adapter.model_fingerprint, modality="text", high=4.0, low=1.0,
                bound=0.3, coherence="c", score="s").save()
    half, run = _generate_capture(adapter, style, 0.5)      # 0.5 x 4.0 = raw 2.0
    assert torch.equal(half, raw_two)
    assert run.calibrations["sevens"].high == 4.0
    zero, _ = _generate_capture(adapter, style, 0.0)
    assert torch.equal(zero, plain)
    with raw_intensities():
        raw_half, raw_run = _generate_capture(adapter, style, 0.5)
    assert raw_run.calibrations == {} and not torch.equal(raw_half, half)
    renamed, run = _generate_capture(adapter, _style(adapter, name="uncalibrated"), 0.5)
    assert run.calibrations == {} and torch.equal(renamed, raw_half)


def test_a_calibration_for_another_checkpoint_is_ignored(adapter, home, monkeypatch):
    style = _style(adapter)
    other = ReferenceAdapter(ReferenceLM(ReferenceConfig(seed=1)))  # another checkpoint
    assert other.model_fingerprint.short() == adapter.model_fingerprint.short()
    Calibration(style="sevens", model=other.model_fingerprint, modality="text", high=3.0, low=None,
                bound=0.3, coherence="c", score="s").save(
        user_calibration_path("sevens", adapter.model_fingerprint))
    assert find_calibration(style, adapter.model_fingerprint) is None
    monkeypatch.setenv("POLYSTEER_CALIBRATION", "off")
    Calibration(style="sevens", model=adapter.model_fingerprint, modality="text", high=3.0, low=None,
                bound=0.3, coherence="c", score="s").save()
    _, run = _generate_capture(adapter, style, 0.5)
    assert run.calibrations == {}


def test_a_broken_calibration_file_names_the_fix(adapter, home):
    path = user_calibration_path("sevens", adapter.model_fingerprint)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"format": "polysteer-calibration/1", "style": "sevens"}))
    with pytest.raises(CorruptFileError, match="polysteer calibrate"):
        find_calibration("sevens", adapter.model_fingerprint)


def test_calibrate_needs_a_judge_spec_and_a_positive_grid(adapter, home):
    style = _style(adapter, name="no-such-judge-style")
    with pytest.raises(ConfigError, match="judge"):
        calibrate(adapter, style, progress=False)
    with pytest.raises(ConfigError, match="positive"):
        calibrate(adapter, style, judge=SevensJudge(), grid=[0.0, 1.0], progress=False)


def test_plot_calibration_writes_a_png(adapter, home, tmp_path):
    cal = calibrate(adapter, _style(adapter), judge=SevensJudge(), grid=[1.0, 8.0], progress=False)
    path = plot_calibration(cal, tmp_path / "cal.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_the_cli_names_the_missing_judge_in_one_line(home, capsys):
    from polysteer.cli import main

    assert main(["calibrate", "reference-demo", "--model", "reference"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--judge" in err and err.count("\n") == 1
