"""Calibration on an image model: the avatar classifier judge, on the tiny avatar architecture."""

from __future__ import annotations

import pytest
import torch

from polysteer.features.concepts import direction_set, median_norm
from polysteer.plugins.image.adapter import DiffusersAdapter
from polysteer.plugins.image.evaluation import CHANGED_BOUND, ImageCalibrationJudge
from polysteer.plugins.image.testing import tiny_avatar_pipeline
from polysteer.steering.runtime import steer
from polysteer.steering.style import Component, Style
from polysteer.workflows import calibrate, make_judge

SITE = "up.1"


def test_image_calibration_mechanism_on_the_tiny_avatar_model(plugin_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path))
    adapter = DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar")
    with steer(adapter, None, capture=[SITE]) as run:
        adapter.generate(2, seed=0, num_inference_steps=2)
    acts = run.captured(SITE)
    vector = torch.randn(acts.shape[-1], generator=torch.Generator().manual_seed(0))
    d = direction_set([vector], ["push"], site=SITE, site_norm=median_norm(acts),
                      model=adapter.model_fingerprint, method="test")
    style = Style(name="push", components=[Component("push", dictionary=d, feature="push")])
    spec = {"name": "smile", "image": {"attributes": {"mouth": "smile"}, "seeds": 3, "steps": 2}}
    judge = make_judge(adapter, style, spec)
    assert isinstance(judge, ImageCalibrationJudge) and "mouth" not in judge.others
    cal = calibrate(adapter, style, judge=judge, grid=[1.0, 50.0], stop_after=0, progress=False)
    base, mild, huge = cal.points
    assert base["coherence"] == 0.0 and base["distance"] == 0.0
    assert 0.0 <= mild["score"] <= 1.0 and huge["distance"] > mild["distance"] > 0.0
    assert cal.bound == CHANGED_BOUND and cal.modality == "image"
    assert cal.high in (1.0, 50.0)
    with pytest.raises(ValueError, match="no mouth=grin"):
        ImageCalibrationJudge(adapter, {"image": {"attributes": {"mouth": "grin"}}})
