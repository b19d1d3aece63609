"""Calibration on the real SmolLM2 (slow): the CLI end to end, and shipped calibrations at steer time."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import polysteer as ps

    return ps.load_model("smollm2")


def test_calibrate_cli_on_smollm2(tmp_path, capsys):
    from polysteer.cli import main

    spec = tmp_path / "pirate-small.yaml"
    spec.write_text(json.dumps({"name": "pirate-small", "text": {
        "positive": ["Arr, ahoy matey, me ship be sailin'!", "Aye, ye scallywag, hoist the sails!"],
        "negative": ["The meeting is on Tuesday.", "Please send the report."],
        "prompts": ["Tell me about your weekend.", "Describe the town where you live."],
        "new_tokens": 8}}))
    out = tmp_path / "cal.json"
    assert main(["calibrate", "pirate", "--model", "smollm2", "--judge", str(spec), "--grid", "1", "6",
                 "--all-points", "-o", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    printed = capsys.readouterr().out
    assert "intensity 1.0 = raw" in printed
    data = json.loads(out.read_text())
    assert [p["intensity"] for p in data["points"]] == [0.0, 1.0, 6.0]
    assert data["model"]["name"] == "smollm2" and data["details"]["judge"]["spec"] == "pirate-small"
    broken = data["points"][-1]
    assert broken["coherence"] > data["points"][0]["coherence"]  # 6 x the shipped weight breaks it
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_shipped_calibrations_scale_shipped_styles(llm):
    import polysteer as ps

    found = ps.calibration_for("pirate", llm)
    if found is None:
        pytest.skip("no shipped calibration for pirate on this SmolLM2 build")
    assert 0 < found["high"] <= 3.0
    with ps.steer(llm, "pirate", intensity=0.5) as run:
        pass
    assert run.calibrations["pirate"].high == found["high"]
