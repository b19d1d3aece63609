"""Text classifiers from feature activations: fit, compare against baselines, predict and explain.

The modality-agnostic parts (pooling, the sparse logistic read-out, metrics, files) live in
:mod:`polysteer.features.classifier`; this module reads texts through the model and adds the text-only
baseline (TF-IDF + logistic regression).

Example (the tiny random model here; ``polysteer classify fit`` does the same on SmolLM2)::

    from polysteer.plugins.text.classify import fit_text_classifier, predict_texts
    from polysteer.plugins.text.testing import tiny_text_adapter

    adapter = tiny_text_adapter()
    texts = ["the happy cat", "a happy dog", "happy happy day", "good food", "very good friend",
             "the sad cat", "a sad dog", "sad sad night", "bad food", "very bad day"] * 2
    labels = ["good"] * 5 + ["bad"] * 5 + ["good"] * 5 + ["bad"] * 5
    clf = fit_text_classifier(adapter, None, texts, labels, positive="good",
                              site="blocks.1.resid_post", folds=2)
    [p] = predict_texts(adapter, clf, ["a happy friend"])
    print(p.label, round(p.probability, 2), p.drivers[0].label)
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from polysteer.features import (
    OUTLIER_FACTOR,
    POOLS,
    ClassifierError,
    Driver,
    FeatureClassifier,
    FeatureDictionary,
    binary_metrics,
    fit_linear,
    from_fit,
    pooled_features,
    resolve_dictionary,
    roc_curve,
)
from polysteer.io import pyplot, save_png, say
from polysteer.plugins.text.dictionary import DEFAULT_MAX_TOKENS
from polysteer.plugins.text.harvest import TextRenderer, text_tokens
from polysteer.workflows import batched, collect

# -- reading texts -------------------------------------------------------------------------------


def text_activations(adapter: Any, texts: Sequence[str], site: str, *, batch_size: int = 16,
                     max_tokens: int = DEFAULT_MAX_TOKENS, progress: bool = False,
                     desc: str = "reading texts") -> list[torch.Tensor]:
    """Per text, the ``(tokens, channels)`` float32 activations at ``site`` of its real tokens.

    The core harvest with renderer ``text`` (right padding, truncated to ``max_tokens``) and
    selector ``text-tokens`` keeping every real token: texts are batched by length (little
    padding) and the forward pass stops after ``site``. Attention sinks are kept:
    :func:`drop_sinks` removes them.
    """
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    got = collect(adapter, batched([texts[i] for i in order], batch_size), [site],
                  renderer=TextRenderer(max_tokens, padding_side="right"),
                  rows=text_tokens(skip_first=False, outlier_factor=None), progress=progress,
                  total_items=len(texts), desc=desc)
    out: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    for i, rows in zip(order, got.per_example(site), strict=True):
        out[i] = rows
    return out


def text_token_ids(adapter: Any, texts: Sequence[str], max_tokens: int = DEFAULT_MAX_TOKENS
                   ) -> list[torch.Tensor]:
    """Per text, the token ids :func:`text_activations` reads (same truncation, no padding)."""
    out = []
    for start in range(0, len(texts), 256):
        encoded = adapter.encode(list(texts[start:start + 256]), chat=False, max_tokens=max_tokens,
                                 padding_side="right")
        out += [ids[mask.bool()] for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"],
                                                        strict=True)]
    return out


def record_firing_tokens(adapter: Any, classifier: FeatureClassifier, texts: Sequence[str],
                         acts: Sequence[torch.Tensor], top: int = 5) -> None:
    """Store, per chosen column, the ``top`` distinct tokens of ``texts`` where its feature fires
    most (``columns[i]["fires_on"]``): a data-grounded description next to the dictionary's label."""
    from polysteer.plugins.text.labels import clean_token

    ids = text_token_ids(adapter, texts)
    keep = [a.norm(dim=-1) <= OUTLIER_FACTOR * classifier.site_norm for a in acts]
    tokens = torch.cat([i[k] for i, k in zip(ids, keep, strict=True)])
    kept = torch.cat([a[k] for a, k in zip(acts, keep, strict=True)])
    features = sorted({c["feature"] for c in classifier.info["columns"]})
    with torch.no_grad():
        values = (kept if classifier.dictionary is None else torch.cat(
            [classifier.dictionary.encode(chunk) for chunk in kept.split(4096)]))[:, features].float()
    words: dict[int, list[str]] = {}
    for j, feature in enumerate(features):
        found: list[str] = []
        for position in torch.argsort(values[:, j], descending=True, stable=True).tolist():
            if values[position, j] <= 0 or len(found) == top:
                break
            word = clean_token(adapter.tokenizer, int(tokens[position]))
            if word and word not in found:
                found.append(word)
        words[feature] = found
    for column in classifier.info["columns"]:
        column["fires_on"] = words[column["feature"]]


def estimate_site_norm(acts: Sequence[torch.Tensor]) -> float:
    """Median token norm, leaving out each text's first token (often an attention sink)."""
    norms = [a[1:].norm(dim=-1) for a in acts if len(a) > 1]
    if not norms:
        raise ClassifierError("texts are too short to estimate the site's typical norm")
    return float(torch.cat(norms).median())


def drop_sinks(acts: Sequence[torch.Tensor], site_norm: float) -> list[torch.Tensor]:
    """Each text without its attention sinks (norm > OUTLIER_FACTOR site norms), as rules read it."""
    return [a[a.norm(dim=-1) <= OUTLIER_FACTOR * site_norm] for a in acts]


# -- shortcuts: digits ----------------------------------------------------------------------------
DIGIT_RUN = re.compile(r"\d+(?:[.,:/]\d+)*")


def strip_digits(text: str) -> str:
    """``text`` without its numbers (runs of digits with their inner ``.,:/``), spaces tidied."""
    return re.sub(r"[ \t]{2,}", " ", DIGIT_RUN.sub("", text)).strip()


def digit_free_copies(texts: Sequence[str], labels: Sequence[Any]) -> tuple[list[str], list[Any]]:
    """A copy of each text that holds digits, with them stripped (:func:`strip_digits`), and its
    label: training on both teaches a classifier that numbers alone do not decide the class."""
    pairs = [(strip_digits(t), lab) for t, lab in zip(texts, labels, strict=True) if DIGIT_RUN.search(t)]
    pairs = [(t, lab) for t, lab in pairs if t]
    return [t for t, _ in pairs], [lab for _, lab in pairs]


def digit_features(adapter: Any, dictionary: FeatureDictionary, texts: Sequence[str],
                   acts: Sequence[torch.Tensor], site_norm: float, share: float = 0.5,
                   max_tokens: int = DEFAULT_MAX_TOKENS) -> list[int]:
    """Features that mostly read digits: over ``texts`` (their activations ``acts`` from
    :func:`text_activations`, sinks left out), the share of each feature's total activation that
    falls on tokens holding a digit exceeds ``share``. Features that never fire are not listed."""
    ids = text_token_ids(adapter, texts, max_tokens)
    vocab: dict[int, bool] = {}
    on_digits = torch.zeros(dictionary.d_features, dtype=torch.float64)
    total = torch.zeros(dictionary.d_features, dtype=torch.float64)
    with torch.no_grad():
        for tokens, a in zip(ids, acts, strict=True):
            keep = a.norm(dim=-1) <= OUTLIER_FACTOR * site_norm
            if not keep.any():
                continue
            f = dictionary.encode(a[keep].to(dictionary.device)).float().clamp_min(0).cpu().double()
            digit = torch.tensor([vocab.setdefault(int(t), any(c.isdigit() for c in adapter.tokenizer.decode(
                [int(t)]))) for t in tokens[keep]], dtype=torch.bool)
            total += f.sum(0)
            on_digits += f[digit].sum(0)
    fired = total > 0
    return torch.nonzero(fired & (on_digits > share * total)).flatten().tolist()


# -- labels ----------------------------------------------------------------------------------------
def binary_labels(labels: Sequence[Any], positive: str | None = None,
                  negative: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, str, str]:
    """``(keep mask, y in {0,1} for kept, positive name, negative name)``.

    ``positive`` defaults to the rarer of exactly two labels; ``negative`` to every other label.
    Unlabelled examples and labels in neither group are dropped.
    """
    names = [str(x) for x in labels if x is not None]
    counts = Counter(names)
    if positive is None:
        if len(counts) != 2:
            raise ClassifierError(f"the data has labels {sorted(counts)}: say which is the positive "
                                  "class (--positive LABEL)")
        positive = min(sorted(counts), key=lambda k: counts[k])
    if positive not in counts:
        raise ClassifierError(f"positive label {positive!r} is not in the data; labels are {sorted(counts)}")
    negatives = set(negative) if negative else set(counts) - {positive}
    unknown = negatives - set(counts)
    if unknown:
        raise ClassifierError(f"negative labels {sorted(unknown)} are not in the data; labels are "
                              f"{sorted(counts)}")
    keep = torch.tensor([x is not None and (str(x) == positive or str(x) in negatives) for x in labels])
    y = torch.tensor([float(str(x) == positive) for x, k in zip(labels, keep, strict=True) if k])
    return keep, y, positive, "+".join(sorted(negatives))


# -- TF-IDF baseline ---------------------------------------------------------------------------------
def _terms(text: str, ngrams: int) -> list[str]:
    words = re.findall(r"\w+", text.lower())
    return [" ".join(words[i:i + n]) for n in range(1, ngrams + 1) for i in range(len(words) - n + 1)]


@dataclass
class Tfidf:
    """Word 1..``ngrams``-gram TF-IDF (sublinear tf, smoothed idf, L2-normalised rows)."""

    ngrams: int = 2
    min_df: int = 2
    max_terms: int = 5000
    vocabulary: dict[str, int] = field(default_factory=dict)
    idf: torch.Tensor | None = None

    def fit(self, texts: Sequence[str]) -> Tfidf:
        df = Counter(t for text in texts for t in set(_terms(text, self.ngrams)))
        kept = sorted((t for t, c in df.items() if c >= self.min_df), key=lambda t: (-df[t], t))
        self.vocabulary = {t: i for i, t in enumerate(kept[:self.max_terms])}
        n = len(texts)
        self.idf = torch.tensor([math.log((1 + n) / (1 + df[t])) + 1 for t in self.vocabulary])
        return self

    def transform(self, texts: Sequence[str]) -> torch.Tensor:
        if self.idf is None:
            raise ClassifierError("fit the TF-IDF vocabulary before transforming")
        x = torch.zeros(len(texts), len(self.vocabulary))
        for row, text in enumerate(texts):
            for term, count in Counter(_terms(text, self.ngrams)).items():
                col = self.vocabulary.get(term)
                if col is not None:
                    x[row, col] = 1 + math.log(count)
        x = x * self.idf
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


# -- fitting -----------------------------------------------------------------------------------------
def _dictionary_and_site(adapter: Any, dictionary: Any, site: str | None
                         ) -> tuple[FeatureDictionary | None, str | None, str]:
    """(loaded dictionary or None, its reference as given, site), checked against the model."""
    ref = None
    if dictionary is not None:
        ref = dictionary if isinstance(dictionary, str) else None
        dictionary = resolve_dictionary(dictionary)
        if site is not None and site != dictionary.info.site:
            raise ClassifierError(f"dictionary {ref or ''} reads site {dictionary.info.site!r}; "
                                  f"leave out site={site!r} or pick a dictionary made at it")
        site = dictionary.info.site
        dictionary.check_compatible(adapter.model_fingerprint, site, adapter.bind(site).channels)
    elif site is None:
        raise ClassifierError("without a dictionary, say which site to read (site=...)")
    return dictionary, ref, site


def _columns(dictionary: FeatureDictionary | None, width: int, pools: Sequence[str],
             features: Sequence[int | str] | None) -> torch.Tensor | None:
    """Pooled columns of hand-chosen ``features`` (every pool), or None for all columns."""
    if features is None:
        return None
    index = [dictionary.feature_index(f) if dictionary is not None else int(f) for f in features]
    return torch.tensor([p * width + i for p in range(len(pools)) for i in index])


def fit_text_classifier(adapter: Any, dictionary: Any, texts: Sequence[str], labels: Sequence[Any], *,
                        positive: str | None = None, negative: Sequence[str] | None = None,
                        site: str | None = None, pools: Sequence[str] = POOLS,
                        features: Sequence[int | str] | None = None, folds: int = 5, seed: int = 0,
                        name: str = "classifier", batch_size: int = 16, progress: bool = False,
                        acts: Sequence[torch.Tensor] | None = None,
                        exclude_digit_features: float | None = None) -> FeatureClassifier:
    """Fit a sparse classifier of ``texts`` from ``dictionary``'s pooled features.

    ``dictionary`` is a name, folder or loaded dictionary, or None for raw activations at ``site``.
    With ``features`` (indices or labels) only those features are used (an L2 fit, not L1).
    ``acts`` reuses already read activations (from :func:`text_activations`). With
    ``exclude_digit_features`` (a share, e.g. 0.5) the features that mostly read digits
    (:func:`digit_features`) are left out of the fit, so numbers alone cannot decide the class
    (SMS spam is full of phone numbers and prices; spam without them is still spam); they are
    listed in ``info["excluded_features"]``.
    """
    dictionary, ref, site = _dictionary_and_site(adapter, dictionary, site)
    keep, y, pos, neg = binary_labels(labels, positive, negative)
    kept = [t for t, k in zip(texts, keep, strict=True) if k]
    if acts is None:
        acts = text_activations(adapter, kept, site, batch_size=batch_size, progress=progress)
    else:
        acts = [a for a, k in zip(acts, keep, strict=True) if k]
    if dictionary is not None and acts:
        estimate = dictionary.ensure_site_norm(torch.cat(list(acts)))
        if estimate is not None:
            say(f"{dictionary.describe()}: it has no site norm, so {estimate:.4g} was estimated from the "
                "training texts (in memory; the classifier stores it)")
    site_norm = dictionary.info.site_norm if dictionary is not None else estimate_site_norm(acts)
    x = pooled_features(drop_sinks(acts, site_norm), dictionary, pools)
    channels = adapter.bind(site).channels
    width = dictionary.d_features if dictionary is not None else channels
    candidates = _columns(dictionary, width, pools, features)
    penalty = "l1" if candidates is None else "l2"
    excluded: list[int] = []
    if exclude_digit_features is not None:
        if dictionary is None:
            raise ClassifierError("leaving out digit features needs a dictionary (raw activations "
                                  "have no features)")
        excluded = digit_features(adapter, dictionary, kept, acts, site_norm, exclude_digit_features)
        drop = torch.tensor([p * width + i for p in range(len(pools)) for i in excluded], dtype=torch.long)
        every = candidates if candidates is not None else torch.arange(len(pools) * width)
        candidates = every[~torch.isin(every, drop)]
    fit = fit_linear(x if candidates is None else x[:, candidates], y, penalty=penalty, folds=folds,
                     seed=seed, progress=progress)
    clf = from_fit(fit, name=name, classes=(neg, pos), site=site, site_norm=site_norm,
                   channels=channels, model=adapter.model_fingerprint, dictionary=dictionary,
                   dictionary_ref=ref, pools=pools, candidates=candidates,
                   extra={"examples": {"total": len(y), pos: int(y.sum()), neg: int(len(y) - y.sum())}})
    if exclude_digit_features is not None:
        clf.info["excluded_features"] = {"reason": f"more than {exclude_digit_features:g} of their "
                                                   "activation on digit tokens", "features": excluded}
    record_firing_tokens(adapter, clf, kept, acts)
    return clf


# -- predicting ------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """One text's result: P(positive), the predicted class and the features that drove it."""

    text: str
    probability: float
    label: str
    drivers: list[Driver]


def predict_texts(adapter: Any, classifier: FeatureClassifier, texts: Sequence[str], *, top: int = 3,
                  batch_size: int = 16, progress: bool = False) -> list[Prediction]:
    """Classify ``texts``; each prediction lists the ``top`` features behind its decision."""
    classifier.check_compatible(adapter.model_fingerprint, classifier.site,
                                adapter.bind(classifier.site).channels)
    acts = text_activations(adapter, texts, classifier.site, batch_size=batch_size, progress=progress)
    pooled = pooled_features(drop_sinks(acts, classifier.site_norm), classifier.dictionary,
                             classifier.pools)
    probs = torch.sigmoid(classifier.logits_from_pooled(pooled))
    negative, positive = classifier.classes
    return [Prediction(text, float(p), positive if p >= classifier.threshold else negative,
                       classifier.drivers(row, top))
            for text, p, row in zip(texts, probs, pooled, strict=True)]


# -- comparing with baselines --------------------------------------------------------------------
METHODS = {"features": "dictionary features, L1 logistic", "raw": "raw activations, L2 logistic",
           "tfidf": "TF-IDF words, L2 logistic"}
"""What each row of a :class:`Comparison` is (``features`` reads raw activations when no dictionary
is given: then it is the L1 read-out of raw activations)."""


@dataclass
class Comparison:
    """Held-out results of the feature classifier and both baselines on the same split."""

    classifier: FeatureClassifier
    metrics: dict[str, dict[str, float]]
    roc: dict[str, tuple[list[float], list[float]]]
    split: dict[str, Any]

    def method(self, key: str) -> str:
        """A readable name of method ``key``."""
        if key == "features" and self.classifier.dictionary is None:
            return "raw activations, L1 logistic"
        return METHODS[key]

    def table(self) -> str:
        """A readable table: one row per method."""
        head = f"{'method':<36} {'accuracy':>8} {'F1':>6} {'ROC AUC':>8} {'texts/s':>8} {'columns':>8}"
        rows = [head, "-" * len(head)]
        for key, m in self.metrics.items():
            rows.append(f"{self.method(key):<36} {m['accuracy']:>8.3f} {m['f1']:>6.3f} {m['roc_auc']:>8.3f} "
                        f"{m['texts_per_s']:>8.1f} {int(m['columns']):>8d}")
        return "\n".join(rows)


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def compare(adapter: Any, dictionary: Any, train: tuple[Sequence[str], Sequence[Any]],
            test: tuple[Sequence[str], Sequence[Any]], *, positive: str | None = None,
            negative: Sequence[str] | None = None, site: str | None = None,
            pools: Sequence[str] = POOLS, features: Sequence[int | str] | None = None,
            folds: int = 5, seed: int = 0,
            name: str = "classifier", batch_size: int = 16, progress: bool = False,
            digit_copies: bool = False, exclude_digit_features: float | None = None) -> Comparison:
    """Fit on ``train`` and score on ``test`` (texts, labels): features vs raw vs TF-IDF.

    ``dictionary`` None fits the main classifier on raw activations at ``site`` (L1). With
    ``digit_copies`` every training text holding digits is also trained on without them
    (:func:`digit_free_copies`; all three methods see the copies, the test texts stay as they are);
    ``exclude_digit_features`` is passed to :func:`fit_text_classifier`.

    Throughput counts everything a method needs per text: the model's forward pass up to the site
    (timed once and charged to both activation methods), pooling and the read-out; TF-IDF counts
    vectorising and the read-out.
    """
    site = _dictionary_and_site(adapter, dictionary, site)[2]
    keep_tr, y_tr, pos, neg = binary_labels(train[1], positive, negative)
    negatives = neg.split("+")
    keep_te, y_te, _, _ = binary_labels(test[1], pos, negatives)
    tr_texts = [t for t, k in zip(train[0], keep_tr, strict=True) if k]
    tr_labels = [lab for lab, k in zip(train[1], keep_tr, strict=True) if k]
    te_texts = [t for t, k in zip(test[0], keep_te, strict=True) if k]
    if digit_copies:
        more, more_labels = digit_free_copies(tr_texts, tr_labels)
        tr_texts, tr_labels = tr_texts + more, tr_labels + more_labels
        y_tr = torch.cat([y_tr, torch.tensor([float(str(lab) == pos) for lab in more_labels])])
    tr_acts = text_activations(adapter, tr_texts, site, batch_size=batch_size, progress=progress,
                               desc="reading training texts")
    te_acts, forward_s = _timed(lambda: text_activations(
        adapter, te_texts, site, batch_size=batch_size, progress=progress, desc="reading test texts"))
    clf = fit_text_classifier(adapter, dictionary, tr_texts, tr_labels, acts=tr_acts, name=name,
                              site=None if dictionary is not None else site, features=features,
                              positive=pos, negative=negatives, pools=pools, folds=folds, seed=seed,
                              progress=progress, exclude_digit_features=exclude_digit_features)
    if digit_copies:
        clf.info["digit_copies"] = len(more)
    raw = _fit_raw(tr_acts, y_tr, clf, adapter, folds, seed, progress)
    metrics, roc = {}, {}
    for key, model in (("features", clf), ("raw", raw)):
        probs, spent = _timed(lambda m=model: torch.sigmoid(m.logits_from_pooled(pooled_features(
            drop_sinks(te_acts, m.site_norm), m.dictionary, m.pools))))
        metrics[key] = {**binary_metrics(probs, y_te), "columns": len(model.columns),
                        "texts_per_s": len(te_texts) / (forward_s + spent)}
        roc[key] = roc_curve(probs, y_te)
    probs, spent, columns = _tfidf(tr_texts, y_tr, te_texts, folds, seed)
    metrics["tfidf"] = {**binary_metrics(probs, y_te), "columns": columns,
                        "texts_per_s": len(te_texts) / spent}
    roc["tfidf"] = roc_curve(probs, y_te)
    split = {"train": len(tr_texts), "test": len(te_texts), "positive": pos, "negative": neg,
             "test_positive": int(y_te.sum())}
    clf.info["heldout"] = {k: {m: round(v, 4) for m, v in d.items()} for k, d in metrics.items()}
    clf.info["split"] = split
    return Comparison(clf, metrics, roc, split)


def _fit_raw(acts: Sequence[torch.Tensor], y: torch.Tensor, clf: FeatureClassifier, adapter: Any,
             folds: int, seed: int, progress: bool = False) -> FeatureClassifier:
    """The no-dictionary baseline on ``clf``'s activations, site, sink filter and pools, with L2."""
    x = pooled_features(drop_sinks(acts, clf.site_norm), None, clf.pools)
    fit = fit_linear(x, y, penalty="l2", folds=folds, seed=seed, progress=progress)
    return from_fit(fit, name="raw-baseline", classes=clf.classes, site=clf.site,
                    site_norm=clf.site_norm, channels=int(clf.info["channels"]),
                    model=adapter.model_fingerprint, dictionary=None, dictionary_ref=None,
                    pools=clf.pools)


def _tfidf(train_texts: Sequence[str], y: torch.Tensor, test_texts: Sequence[str], folds: int, seed: int
           ) -> tuple[torch.Tensor, float, int]:
    """(test probabilities, seconds spent on the test texts, vocabulary size)."""
    vec = Tfidf().fit(train_texts)
    fit = fit_linear(vec.transform(train_texts), y, penalty="l2", folds=folds, seed=seed)
    probs, spent = _timed(lambda: fit.probabilities(vec.transform(test_texts)))
    return probs, spent, len(vec.vocabulary)


def plot_roc(comparison: Comparison, path: Any) -> Any:
    """Write the ROC curves of every method as a PNG (None when matplotlib is missing)."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for key, (fpr, tpr) in comparison.roc.items():
        auc = comparison.metrics[key]["roc_auc"]
        ax.plot(fpr, tpr, label=f"{comparison.method(key)} (AUC {auc:.3f})", drawstyle="steps-post")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    split = comparison.split
    ax.set_title(f"{split['positive']} vs {split['negative']} ({split['test']} held-out texts)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)
