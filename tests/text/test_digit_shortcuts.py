"""The digit-shortcut guards of text classifiers, on the tiny model (fast)."""

from __future__ import annotations

import json

import pytest
import torch

from polysteer.errors import ConfigError
from polysteer.features import SparseAutoencoder
from polysteer.features.dictionary import DictionaryInfo
from polysteer.plugins.text.classify import (
    digit_features,
    digit_free_copies,
    fit_text_classifier,
    strip_digits,
    text_token_ids,
)
from polysteer.plugins.text.shortcuts import load_probe
from polysteer.plugins.text.testing import tiny_text_adapter

SITE = "blocks.1.resid_post"


def test_strip_digits_removes_numbers_and_tidies_spaces():
    assert strip_digits("Call 09061701461 to claim your £1,000.50 prize by 21/05") == \
        "Call to claim your £ prize by"
    assert strip_digits("no numbers here") == "no numbers here"
    texts, labels = digit_free_copies(["win 100 now", "hello", "42"], ["spam", "ham", "ham"])
    assert texts == ["win now"] and labels == ["spam"], "only texts with digits; empty copies dropped"


SPAMMY = ("ship", "sea")
NUMBERS = {"gold": "7", "red": "42"}  # the tiny word-level vocabulary has no digits: these stand in


def _numbers(adapter, monkeypatch):
    """The tiny adapter with ``gold`` and ``red`` decoding as numbers."""
    decode = adapter.tokenizer.decode

    def as_numbers(ids, *args, **kwargs):
        text = decode(ids, *args, **kwargs)
        return NUMBERS.get(text.strip(), text)
    monkeypatch.setattr(adapter.tokenizer, "decode", as_numbers)
    return adapter


def _crafted(adapter, texts):
    """Activations whose channel 0 is 1 on every token, channel 1 on tokens holding a digit and
    channel 2 on spammy words, read by an SAE whose feature i is channel i."""
    channels = adapter.bind(SITE).channels
    acts = []
    for ids in text_token_ids(adapter, texts):
        a = torch.zeros(len(ids), channels)
        a[:, 0] = 1.0
        for row, token in enumerate(ids.tolist()):
            piece = adapter.tokenizer.decode([token])
            a[row, 1] = float(any(c.isdigit() for c in piece))
            a[row, 2] = float(piece.strip().lower() in SPAMMY)
        acts.append(a)
    info = DictionaryInfo(model=adapter.model_fingerprint, site=SITE, site_norm=1.0, method="test")
    sae = SparseAutoencoder(channels, 3, info, "relu")
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(channels, 3))
        sae.b_enc.zero_()
        sae.W_dec.copy_(torch.eye(3, channels))
        sae.b_dec.zero_()
    return acts, sae


def test_digit_features_finds_the_feature_that_reads_digits(monkeypatch):
    adapter = _numbers(tiny_text_adapter(), monkeypatch)
    texts = ["ship gold day", "it is red gold", "a happy day", "the cat sat red"]
    acts, sae = _crafted(adapter, texts)
    assert digit_features(adapter, sae, texts, acts, site_norm=1.0, share=0.5) == [1]


def test_fit_leaves_digit_features_out_and_says_so(monkeypatch):
    adapter = _numbers(tiny_text_adapter(), monkeypatch)
    texts = ["ship gold now", "sea red red", "the ship gold", "sea gold red", "a sea red",
             "hello friend", "the cat sat", "a happy day", "good night", "food at home"] * 2
    labels = (["spam"] * 5 + ["ham"] * 5) * 2
    acts, sae = _crafted(adapter, texts)
    plain = fit_text_classifier(adapter, sae, texts, labels, positive="spam", folds=2, acts=acts)
    assert "excluded_features" not in plain.info
    clf = fit_text_classifier(adapter, sae, texts, labels, positive="spam", folds=2, acts=acts,
                              exclude_digit_features=0.5)
    assert clf.info["excluded_features"]["features"] == [1]
    assert clf.info["columns"] and all(c["feature"] != 1 for c in clf.info["columns"])


def test_probe_files_are_checked(tmp_path):
    bad = tmp_path / "probe.json"
    bad.write_text(json.dumps({"pairs": [{"label": "spam", "digits": "no digits", "plain": "x"}]}))
    with pytest.raises(ConfigError, match="pairs.0"):
        load_probe(bad)
    bad.write_text(json.dumps({"pairs": "nope"}))
    with pytest.raises(ConfigError, match="a probe set"):
        load_probe(bad)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
EXTRA = ROOT / "scripts" / "data" / "spam_training_extra.jsonl"
PROBE = ROOT / "tests" / "text" / "data" / "spam_shortcuts.json"


def test_the_written_training_texts_are_separate_from_the_held_out_probe():
    """The spam the shipped classifier is fitted on besides SMS (other scams, e-mail spam and
    ordinary messages about the same things) shares no text with the probe that measures it, and
    no six-word run beyond four stock phrases of the genre, found after the fit (4 of the 20 probe
    pairs hold one; docs/classifiers.md reports the probe with and without those pairs). Any new
    overlap fails here."""
    import re

    rows = [json.loads(line) for line in EXTRA.read_text().splitlines()]
    assert {r["label"] for r in rows} == {"spam", "ham"}
    assert min(sum(r["label"] == lab for r in rows) for lab in ("spam", "ham")) >= 50
    probe = load_probe(PROBE)
    held = [p[side] for p in probe["pairs"] for side in ("digits", "plain")]
    held += probe["other_spam"] + probe["email_spam"] + probe["ham"]

    def runs(text: str, n: int = 6) -> set[str]:
        words = re.findall(r"\w+", text.lower())
        return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}

    train = [r["text"] for r in rows]
    assert not set(train) & set(held)
    shared = set().union(*map(runs, train)) & set().union(*map(runs, held))
    known = {"your parcel could not be delivered", "your bank account has been suspended",
             "i ll pay you back on", "this is my new number can", "is my new number can you",
             "my new number can you send"}
    assert shared <= known, sorted(shared - known)[:5]


def test_train_extra_reads_a_file_or_a_sample_of_it(tmp_path):
    from polysteer.errors import PolysteerError
    from polysteer.plugins.text.classify_cli import train_extra

    assert len(train_extra(str(EXTRA))) == len(EXTRA.read_text().splitlines())
    sample = train_extra(f"{EXTRA}:10")
    assert len(sample) == 10 and {str(x) for x in sample.labels} == {"spam", "ham"}
    unlabelled = tmp_path / "plain.txt"
    unlabelled.write_text("one text\nanother\n")
    with pytest.raises(PolysteerError, match="every text needs a label"):
        train_extra(str(unlabelled))
