"""Shortcut checks for text classifiers: does a classifier read what the class means, or a cue that
merely comes with it in the training data (digits in SMS spam)?

A probe set (JSON, see ``tests/text/data/spam_shortcuts.json``) holds

* ``pairs``: the same message with digits (``digits``) and without them (``plain``), and its
  ``label``;
* ``other_spam`` / ``email_spam``: positives unlike the training corpus (scams of another kind,
  e-mail spam);
* ``ham``: ordinary negatives.

:func:`shortcut_report` measures a classifier on it: accuracy on each side of the pairs, the mean and
largest change of P(positive) when the digits go (digit-invariance), recall on each positive group
and specificity on the negatives. Probe texts are for measuring only: fitting on them (or choosing a
method by them) makes the measurement meaningless.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from polysteer.errors import ConfigError
from polysteer.io import read_json

DIGITS = re.compile(r"\d")


def load_probe(path: str | Path) -> dict[str, Any]:
    """Read a probe set, checking its groups (a :class:`~polysteer.errors.ConfigError` names the
    file and what is wrong)."""
    data = read_json(path)
    groups = ("pairs", "other_spam", "email_spam", "ham")
    if not isinstance(data, dict) or any(not isinstance(data.get(g, []), list) for g in groups):
        raise ConfigError(f"{path}: a probe set is a JSON object with lists {', '.join(groups)}")
    for i, pair in enumerate(data.get("pairs", [])):
        if not isinstance(pair, dict) or not {"label", "digits", "plain"} <= set(pair):
            raise ConfigError(f"{path}: pairs.{i} needs label, digits and plain")
        if DIGITS.search(pair["plain"]) or not DIGITS.search(pair["digits"]):
            raise ConfigError(f"{path}: pairs.{i}: 'digits' must hold digits and 'plain' none")
    return data


def shortcut_report(adapter: Any, classifier: Any, probe: dict[str, Any], *, batch_size: int = 16
                    ) -> dict[str, float]:
    """Measure ``classifier`` (positive class: ``classifier.classes[1]``) on ``probe``.

    Returns ``pair_accuracy_digits`` / ``pair_accuracy_plain`` (share of pair texts classified as
    their label), ``pair_agreement`` (share of pairs whose two texts get the same class),
    ``digit_shift_mean`` / ``digit_shift_max`` (mean and largest ``|P(digits) - P(plain)|``),
    ``other_spam_recall``, ``email_spam_recall`` and ``ham_specificity``.
    """
    from polysteer.plugins.text.classify import predict_texts

    positive = classifier.classes[1]
    pairs = probe.get("pairs", [])
    groups = {"digits": [p["digits"] for p in pairs], "plain": [p["plain"] for p in pairs],
              "other_spam": list(probe.get("other_spam", [])),
              "email_spam": list(probe.get("email_spam", [])), "ham": list(probe.get("ham", []))}
    texts = [t for g in groups.values() for t in g]
    probs = [p.probability for p in predict_texts(adapter, classifier, texts, top=0,
                                                   batch_size=batch_size)]
    got: dict[str, list[float]] = {}
    start = 0
    for name, group in groups.items():
        got[name] = probs[start:start + len(group)]
        start += len(group)
    t = classifier.threshold
    want = [p["label"] == positive for p in pairs]
    report: dict[str, float] = {}
    if pairs:
        for side in ("digits", "plain"):
            report[f"pair_accuracy_{side}"] = sum(
                (p >= t) == w for p, w in zip(got[side], want, strict=True)) / len(pairs)
        report["pair_agreement"] = sum((a >= t) == (b >= t) for a, b in zip(
            got["digits"], got["plain"], strict=True)) / len(pairs)
        shifts = [abs(a - b) for a, b in zip(got["digits"], got["plain"], strict=True)]
        report["digit_shift_mean"] = sum(shifts) / len(shifts)
        report["digit_shift_max"] = max(shifts)
    for name in ("other_spam", "email_spam"):
        if got[name]:
            report[f"{name}_recall"] = sum(p >= t for p in got[name]) / len(got[name])
    if got["ham"]:
        report["ham_specificity"] = sum(p < t for p in got["ham"]) / len(got["ham"])
    return {k: round(float(v), 4) for k, v in report.items()}
