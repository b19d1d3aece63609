"""Classifiers from pooled features: metrics, the sparse solver, files, streaming scores."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from polysteer.errors import CorruptFileError, DictionaryMismatchError
from polysteer.features.classifier import (
    ClassifierError,
    StreamingScore,
    binary_metrics,
    fit_linear,
    from_fit,
    load_classifier,
    pooled_features,
    resolve_classifier,
    roc_auc,
    roc_curve,
)
from polysteer.features.concepts import direction_set
from polysteer.features.fingerprint import ModelFingerprint

SITE = "blocks.0.resid_post"


def _pairwise_auc(scores, y):
    pos = [s for s, t in zip(scores.tolist(), y.tolist(), strict=True) if t]
    neg = [s for s, t in zip(scores.tolist(), y.tolist(), strict=True) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_the_pairwise_definition_with_ties():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40,), generator=gen).float()  # many ties
    y = torch.randint(0, 2, (40,), generator=gen)
    assert roc_auc(scores, y) == pytest.approx(_pairwise_auc(scores, y))
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0
    fpr, tpr = roc_curve(scores, y)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert fpr == sorted(fpr) and tpr == sorted(tpr)


def test_binary_metrics_on_a_known_confusion_matrix():
    probs = torch.tensor([0.9, 0.8, 0.3, 0.6, 0.1, 0.2])
    y = torch.tensor([1, 1, 1, 0, 0, 0])  # tp 2, fn 1, fp 1, tn 2
    m = binary_metrics(probs, y)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)


def _sparse_problem(n=300, d=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    logit = 3 * x[:, 3] - 2 * x[:, 17]
    y = (torch.rand(n, generator=gen) < torch.sigmoid(logit)).float()
    return x, y


def test_l1_fit_finds_the_informative_columns_and_is_deterministic():
    x, y = _sparse_problem()
    fit = fit_linear(x, y, penalty="l1")
    chosen = set(torch.nonzero(fit.weight).flatten().tolist())
    assert {3, 17} <= chosen and len(chosen) <= 8
    assert fit.weight[3] > 0 > fit.weight[17]
    again = fit_linear(x, y, penalty="l1")
    assert torch.equal(fit.weight, again.weight) and fit.bias == again.bias
    # the sparse model ranks fresh data from the same process well
    x2, y2 = _sparse_problem(seed=1)
    assert roc_auc(fit.probabilities(x2), y2) > 0.85


def test_l2_fit_uses_every_column():
    x, y = _sparse_problem()
    fit = fit_linear(x, y, penalty="l2")
    assert (fit.weight != 0).all()
    assert [c["strength"] for c in fit.cv] == sorted((c["strength"] for c in fit.cv), reverse=True)


def test_fit_errors_name_the_problem():
    x, y = _sparse_problem(n=20)
    y[:] = 0
    y[:2] = 1
    with pytest.raises(ClassifierError, match="at least 5 examples"):
        fit_linear(x, y)
    with pytest.raises(ClassifierError, match="penalty must be"):
        fit_linear(x, y, penalty="l0")
    with pytest.raises(ClassifierError, match="one label per example"):
        fit_linear(x, y[:5])
    x[0, 0] = float("nan")
    with pytest.raises(ClassifierError, match="NaN"):
        fit_linear(x, y)


def _dictionary(seed=0):
    vectors = list(torch.randn(3, 8, generator=torch.Generator().manual_seed(seed)))
    model = ModelFingerprint(architecture="arch", signature=[1.0, 2.0, 3.0], name="m")
    return direction_set(vectors, ["alpha", "beta", "gamma"], site=SITE, site_norm=2.0, model=model,
                         method="test")


def _examples(d, n=60, seed=0):
    """Examples whose 'beta' feature fires strongly on some position iff the label is 1."""
    gen = torch.Generator().manual_seed(seed)
    acts, labels = [], []
    for i in range(n):
        a = 0.3 * torch.randn(5, 8, generator=gen)
        if i % 2:
            a[2] += 1.5 * d.directions[1]
        acts.append(a)
        labels.append(i % 2)
    return acts, torch.tensor(labels).float()


def _classifier(d, tmp_path=None):
    acts, y = _examples(d)
    x = pooled_features(acts, d, ("max", "mean"))
    fit = fit_linear(x, y, folds=3)
    return from_fit(fit, name="beta-detector", classes=("no", "yes"), site=SITE, site_norm=2.0,
                    channels=8, model=d.info.model, dictionary=d, dictionary_ref="dict",
                    pools=("max", "mean")), acts, y


def test_pooled_features_pool_each_example_over_positions():
    d = _dictionary()
    acts, _ = _examples(d, n=4)
    x = pooled_features(acts, d, ("max", "mean"))
    f = d.encode(acts[1])
    assert x.shape == (4, 6)
    assert torch.allclose(x[1, :3], f.amax(0)) and torch.allclose(x[1, 3:], f.mean(0))
    with pytest.raises(ClassifierError, match="pools must be"):
        pooled_features(acts, d, ("median",))


def test_classifier_reads_the_feature_that_separates_the_classes(tmp_path):
    d = _dictionary()
    clf, acts, y = _classifier(d)
    assert {c["label"] for c in clf.info["columns"]} <= {"alpha", "beta", "gamma"}
    assert clf.info["columns"][0]["label"] == "beta"
    assert roc_auc(clf.probabilities(acts), y) > 0.99
    drivers = clf.drivers(pooled_features(acts[1:2], d, clf.pools)[0])
    assert drivers[0].label == "beta" and drivers[0].contribution > 0


def test_save_and_load_round_trip_and_check_the_dictionary(tmp_path):
    d = _dictionary()
    d.save(tmp_path / "dict")
    clf, acts, _ = _classifier(d)
    clf.save(tmp_path / "clf")
    meta = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert meta["format"] == "polysteer-classifier" and meta["classes"] == ["no", "yes"]
    loaded = load_classifier(tmp_path / "clf")
    assert torch.allclose(loaded.probabilities(acts), clf.probabilities(acts), atol=1e-6)
    assert resolve_classifier("clf", base_dir=tmp_path).describe() == loaded.describe()

    _dictionary(seed=1).save(tmp_path / "dict")  # same name, other weights
    with pytest.raises(DictionaryMismatchError, match="another version of dictionary"):
        load_classifier(tmp_path / "clf")
    (tmp_path / "clf" / "classifier.json").write_text("{broken")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        load_classifier(tmp_path / "clf")
    with pytest.raises(FileNotFoundError, match="classify fit"):
        resolve_classifier("nothing-here", base_dir=tmp_path)


def test_classifier_refuses_another_model_or_site():
    d = _dictionary()
    clf, _, _ = _classifier(d)
    other = ModelFingerprint(architecture="arch", signature=[9.0, 9.0, 9.0], name="other")
    with pytest.raises(DictionaryMismatchError, match="fit it again"):
        clf.check_compatible(other, SITE, 8)
    with pytest.raises(DictionaryMismatchError, match="reads site"):
        clf.check_compatible(d.info.model, "blocks.1.resid_post", 8)


def test_streaming_score_equals_the_pooled_score_and_skips_sinks():
    d = _dictionary()
    clf, acts, _ = _classifier(d)
    batch = torch.stack(acts[:6])  # (6, 5, 8)
    sink = batch.clone()
    sink[:, 0] = 100.0  # a huge first position, like an attention sink: left out
    stream = StreamingScore(clf)
    assert torch.equal(stream.update(sink[:, :0]), torch.zeros(6))
    for chunk in (sink[:, :2], sink[:, 2:3], sink[:, 3:]):
        prob = stream.update(chunk)
    expected = clf.probabilities([a[1:] for a in acts[:6]])
    assert torch.allclose(prob, expected, atol=1e-5)
