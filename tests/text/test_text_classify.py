"""Text classifiers on a tiny random model: fitting, baselines, prediction, the CLI, rule triggers."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from polysteer.cli import main
from polysteer.errors import DictionaryMismatchError
from polysteer.features.concepts import direction_set
from polysteer.plugins.text.classify import (
    Tfidf,
    binary_labels,
    compare,
    fit_text_classifier,
    plot_roc,
    predict_texts,
    text_activations,
)
from polysteer.plugins.text.testing import tiny_model, tiny_text_adapter, tiny_tokenizer
from polysteer.steering.runtime import steer
from polysteer.steering.style import Component, Rule, Style

SITE = "blocks.1.resid_post"
GOOD = ["the happy cat", "a happy dog", "happy happy day", "good food", "very good friend",
        "the good ship", "a happy friend on the sea", "good day to a friend"]
BAD = ["the sad cat", "a sad dog", "sad sad night", "bad food", "very bad day", "the bad ship",
       "a sad friend on the sea", "bad night to a dog"]


@pytest.fixture
def adapter(plugin_manager):
    torch.manual_seed(0)
    return tiny_text_adapter()


def _data(repeat: int = 2):
    texts = (GOOD + BAD) * repeat
    labels = (["good"] * len(GOOD) + ["bad"] * len(BAD)) * repeat
    return texts, labels


def _dictionary(adapter, n: int = 6):
    vectors = list(torch.randn(n, adapter.bind(SITE).channels, generator=torch.Generator().manual_seed(1)))
    return direction_set(vectors, [f"f{i}" for i in range(n)], site=SITE, site_norm=1.0,
                         model=adapter.model_fingerprint, method="test")


def test_binary_labels_default_to_the_rarer_class_and_name_bad_labels():
    keep, y, pos, neg = binary_labels(["ham", "spam", "ham", None])
    assert (pos, neg) == ("spam", "ham") and keep.tolist() == [True, True, True, False]
    assert y.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="--positive"):
        binary_labels(["a", "b", "c"])
    keep, y, pos, neg = binary_labels(["fresh", "rotten", "plot"], "fresh", ["rotten"])
    assert keep.tolist() == [True, True, False] and neg == "rotten"
    with pytest.raises(ValueError, match="'spam' is not in the data"):
        binary_labels(["a", "b"], "spam")


def test_tfidf_keeps_frequent_terms_and_normalises_rows():
    vec = Tfidf(ngrams=2, min_df=2).fit(["free prize now", "free prize", "call me now", "hi"])
    assert set(vec.vocabulary) == {"free", "prize", "now", "free prize"}
    x = vec.transform(["free free prize", "nothing known"])
    assert torch.allclose(x[0].norm(), torch.tensor(1.0)) and x[1].abs().sum() == 0
    assert x[0, vec.vocabulary["free"]] > x[0, vec.vocabulary["prize"]]  # sublinear tf: 1 + log 2


def test_text_activations_do_not_depend_on_the_batch(adapter):
    texts = GOOD[:5]
    one = text_activations(adapter, texts, SITE, batch_size=1)
    many = text_activations(adapter, texts, SITE, batch_size=5)
    for a, b, text in zip(one, many, texts, strict=True):
        assert a.shape[0] == len(text.split())  # real tokens only (word-level tokenizer, no padding)
        assert torch.allclose(a, b, atol=1e-5)


def test_raw_classifier_separates_the_words_and_explains_itself(adapter):
    texts, labels = _data()
    clf = fit_text_classifier(adapter, None, texts, labels, positive="good", site=SITE, folds=2)
    predictions = predict_texts(adapter, clf, ["a happy friend", "the sad night"], top=2)
    assert [p.label for p in predictions] == ["good", "bad"]
    assert predictions[0].probability > 0.5 > predictions[1].probability
    assert len(predictions[0].drivers) == 2
    assert predictions[0].drivers[0].label.startswith("channel ")


def test_classifier_on_a_dictionary_names_its_features_and_refuses_another_model(adapter):
    texts, labels = _data()
    d = _dictionary(adapter)
    clf = fit_text_classifier(adapter, d, texts, labels, positive="good", folds=2)
    assert all(c["label"].startswith("f") for c in clf.info["columns"])
    words = {w for t in texts for w in t.split()}
    assert all(c["fires_on"] and set(c["fires_on"]) <= words for c in clf.info["columns"])
    assert clf.info["dictionary"]["d_features"] == 6
    other = tiny_text_adapter(seed=5)
    with pytest.raises(DictionaryMismatchError, match="fit it again"):
        predict_texts(other, clf, ["a happy cat"])


def test_hand_chosen_features_limit_the_classifier_to_them(adapter):
    texts, labels = _data()
    clf = fit_text_classifier(adapter, _dictionary(adapter), texts, labels, positive="good",
                              features=["f1", 3], folds=2)
    assert {c["feature"] for c in clf.info["columns"]} <= {1, 3}
    assert clf.info["penalty"] == "l2"


def test_compare_scores_all_three_methods_on_the_same_held_out_texts(adapter, tmp_path):
    texts, labels = _data(3)
    train = (texts[:32], labels[:32])
    test = (texts[32:], labels[32:])
    result = compare(adapter, _dictionary(adapter), train, test, positive="good", folds=2)
    assert set(result.metrics) == {"features", "raw", "tfidf"}
    assert result.split == {"train": 32, "test": 16, "positive": "good", "negative": "bad",
                            "test_positive": 8}
    # the words alone separate these texts: the TF-IDF baseline must be perfect on them
    assert result.metrics["tfidf"]["roc_auc"] == 1.0
    for m in result.metrics.values():
        assert 0 <= m["accuracy"] <= 1 and m["texts_per_s"] > 0
    assert "TF-IDF" in result.table()
    assert result.classifier.info["heldout"]["tfidf"]["roc_auc"] == 1.0
    assert plot_roc(result, tmp_path / "roc.png").stat().st_size > 1000


def test_classifier_rule_turns_a_component_on_for_positive_prompts_only(adapter):
    texts, labels = _data()
    clf = fit_text_classifier(adapter, None, texts, labels, positive="good", site=SITE, folds=2)
    d = _dictionary(adapter)
    style = Style("react", [Component("boost", dictionary=d, feature="f0", weight=2.0, enabled=False)],
                  [Rule(None, None, above=0.5, action="apply", target="boost", classifier=clf)])
    with steer(adapter, style, 1.0) as run:
        adapter.generate(["very good friend"], chat=False, max_new_tokens=3)
    assert run.rule_events() and run.rule_events()[0]["step"] == 0  # fires on the prompt
    with steer(adapter, style, 1.0) as run:
        adapter.generate(["sad sad night"], chat=False, max_new_tokens=3)
    assert run.rule_events() == []


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "tiny"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_cli_fit_then_predict(model_dir, tmp_path, monkeypatch, capsys, plugin_manager):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    texts, labels = _data(3)
    with (tmp_path / "mood.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["message", "mood"])
        writer.writerows(zip(texts, labels, strict=True))
    assert main(["classify", "fit", "--model", str(model_dir), "--dictionary", "none", "--site", SITE,
                 "--data", "mood.csv", "--text-column", "message", "--label-column", "mood",
                 "--positive", "good", "--folds", "2", "--out", "runs", "--save", "mood"]) == 0
    out = capsys.readouterr().out
    assert "TF-IDF words" in out and "run folder:" in out
    (run,) = (tmp_path / "runs").iterdir()
    assert {p.name for p in run.iterdir()} >= {"classifier", "report.json", "report.md", "roc.png"}
    report = json.loads((run / "report.json").read_text())
    assert report["split"]["positive"] == "good" and set(report["metrics"]) == {"features", "raw", "tfidf"}
    assert main(["classify", "predict", "--model", str(model_dir), "--classifier", "mood", "--json",
                 "a happy friend", "sad sad night"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["good", "bad"]
    assert main(["classify", "predict", "--model", str(model_dir), "--classifier", "nope", "x"]) == 2
    assert "classify fit" in capsys.readouterr().err


def test_cli_fit_leaves_no_run_folder_when_it_fails(model_dir, tmp_path, monkeypatch, capsys, plugin_manager):
    from polysteer.errors import PolysteerError
    from polysteer.plugins.text import classify

    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    texts, labels = _data(3)
    with (tmp_path / "mood.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["text", "label"], *zip(texts, labels, strict=True)])
    args = ["classify", "fit", "--model", str(model_dir), "--dictionary", "none", "--site", SITE,
            "--data", "mood.csv", "--positive", "good", "--folds", "2", "--out", "runs"]
    assert main([*args, "--name", "no/such"]) == 2  # refused before any text is read
    assert "cannot name a run folder" in capsys.readouterr().err

    def broken_plot(*a, **k):
        raise PolysteerError("the disk is full")

    monkeypatch.setattr(classify, "plot_roc", broken_plot)
    assert main(args) == 2
    assert "the disk is full" in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []  # no half-written run folder

