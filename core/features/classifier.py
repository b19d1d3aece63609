"""Cheap, reproducible classifiers: a sparse linear read-out of pooled feature activations.

Modality-agnostic: each example is its activations ``(positions, channels)`` at one site, from
whatever produced them (tokens of a text, cells of an image, frames of audio).

* The features of an example are its dictionary features (or the raw channels, for the
  "no dictionary" baseline) pooled over positions by ``max`` and/or ``mean``.
* :func:`fit_linear` fits a logistic regression on standardised pooled features with an L1
  penalty (sparse: a few dozen features decide) or L2, the penalty chosen by stratified k-fold
  cross-validation. The solver is deterministic full-batch FISTA in torch: same data, same model.
* :class:`FeatureClassifier` is the result, tied to the model fingerprint, the site and the
  exact dictionary (a digest of its weights); it saves as a folder with ``classifier.json`` (the
  readable part: classes, chosen features with labels, metrics) and ``classifier.safetensors``.
* :class:`StreamingScore` scores positions as they arrive (running max / mean), which is how a
  classifier becomes a rule trigger in a style (``when: {classifier: NAME, above: 0.9}``).

Metrics (:func:`binary_metrics`, :func:`roc_curve`) are small and dependency-free.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from polysteer.errors import CorruptFileError, DictionaryMismatchError, PolysteerError
from polysteer.features.dictionary import FeatureDictionary
from polysteer.features.fingerprint import ModelFingerprint
from polysteer.io.fileio import (
    read_folder,
    read_meta,
    read_tensors,
    write_folder,
    write_json,
    write_tensors,
)
from polysteer.io.safeload import finite

FORMAT = "polysteer-classifier"
FORMAT_VERSION = 1
POOLS = ("max", "mean")
OUTLIER_FACTOR = 10.0
"""Positions whose norm exceeds this many site norms are attention sinks and are not pooled."""


RELAX_L2 = 0.01
"""L2 strength of the refit on the columns an L1 fit chose (on standardised inputs)."""


class ClassifierError(PolysteerError, ValueError):
    """Bad input to fit or apply a classifier (the message says what to change)."""


# -- metrics -------------------------------------------------------------------------------------
def roc_auc(scores: torch.Tensor, y: torch.Tensor) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties count 1/2."""
    scores, y = scores.double().flatten(), y.bool().flatten()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties sharing their average rank."""
    order = torch.argsort(values, stable=True)
    sorted_v = values[order]
    ranks = torch.empty_like(values)
    start = 0
    n = len(values)
    while start < n:
        end = start
        while end + 1 < n and sorted_v[end + 1] == sorted_v[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def roc_curve(scores: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """(false positive rates, true positive rates) over every threshold, from (0, 0) to (1, 1)."""
    scores, y = scores.double().flatten(), y.bool().flatten()
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr, tpr = [0.0], [0.0]
    for t in torch.unique(scores).flip(0):
        chosen = scores >= t
        fpr.append(float((chosen & ~y).sum()) / n_neg)
        tpr.append(float((chosen & y).sum()) / n_pos)
    return fpr, tpr


def binary_metrics(probs: torch.Tensor, y: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive class) at ``threshold``, and ROC AUC."""
    y = y.bool().flatten()
    pred = probs.flatten() >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float((pred == y).float().mean()), "precision": precision,
            "recall": recall, "f1": f1, "roc_auc": roc_auc(probs, y)}


# -- the solver ----------------------------------------------------------------------------------
@dataclass
class LinearFit:
    """A logistic regression on standardised inputs: ``p = sigmoid(((x - mean) / std) @ w + b)``."""

    weight: torch.Tensor
    bias: float
    mean: torch.Tensor
    std: torch.Tensor
    penalty: str
    strength: float
    cv: list[dict[str, float]] = field(default_factory=list)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.mean) / self.std) @ self.weight + self.bias

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    # a column that never varies carries no information; std 1 keeps it at exactly zero
    return mean, torch.where(std > 1e-6 * (1 + mean.abs()), std, torch.ones_like(std))


def _sample_weights(y: torch.Tensor, balanced: bool) -> torch.Tensor:
    if not balanced:
        return torch.full_like(y, 1.0 / len(y))
    n_pos = y.sum().clamp_min(1)
    n_neg = (1 - y).sum().clamp_min(1)
    return torch.where(y > 0, 0.5 / n_pos, 0.5 / n_neg)


def logistic_path(z: torch.Tensor, y: torch.Tensor, penalty: str, strength: float, *,
                  balanced: bool = True, iterations: int = 400) -> tuple[torch.Tensor, float]:
    """Weights and bias minimising weighted log-loss + penalty on standardised inputs ``z``.

    ``penalty`` is ``"l1"`` (``strength * |w|_1``, sparse) or ``"l2"`` (``strength/2 * |w|^2``).
    FISTA with a fixed step from the Lipschitz constant (power iteration), so it is deterministic.
    """
    z, y = z.float(), y.float()
    sw = _sample_weights(y, balanced)
    v = torch.ones(z.shape[1]) / math.sqrt(max(z.shape[1], 1))
    for _ in range(30):  # largest eigenvalue of z' diag(sw) z, for the step size
        v = z.T @ (sw * (z @ v))
        v = v / v.norm().clamp_min(1e-12)
    lipschitz = 0.25 * float(v @ (z.T @ (sw * (z @ v)))) + 0.25 * float(sw.sum())
    lipschitz += strength if penalty == "l2" else 0.0
    step = 1.0 / max(lipschitz, 1e-12)
    w = torch.zeros(z.shape[1])
    b = torch.zeros(())
    w_prev, b_prev, t = w, b, 1.0
    for _ in range(iterations):
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum = (t - 1) / t_next
        yw = w + momentum * (w - w_prev)
        yb = b + momentum * (b - b_prev)
        residual = sw * (torch.sigmoid(z @ yw + yb) - y)
        grad_w, grad_b = z.T @ residual, residual.sum()
        if penalty == "l2":
            grad_w = grad_w + strength * yw
        w_prev, b_prev = w, b
        w = yw - step * grad_w
        if penalty == "l1":
            w = torch.sign(w) * (w.abs() - step * strength).clamp_min(0)
        b = yb - step * grad_b
        t = t_next
    return w, float(b)


def _folds(y: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """Stratified fold index per example (deterministic for ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(y), dtype=torch.long)
    for label in (0, 1):
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        fold[idx] = torch.arange(len(idx)) % k
    return [fold == i for i in range(k)]


def _grid(z: torch.Tensor, y: torch.Tensor, penalty: str, balanced: bool) -> list[float]:
    """Penalty strengths to try, strongest first."""
    if penalty == "l1":  # above lambda_max every weight is zero
        sw = _sample_weights(y.float(), balanced)
        top = float((z.T @ (sw * (y.float() - (sw * y.float()).sum() / sw.sum()))).abs().max())
        return [top * f for f in (0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01)]
    return [10.0, 1.0, 0.1, 0.03, 0.01, 0.003, 0.001]


def fit_linear(x: torch.Tensor, y: torch.Tensor, *, penalty: str = "l1", folds: int = 5,
               seed: int = 0, balanced: bool = True, strengths: Sequence[float] | None = None,
               tolerance: float = 0.005, relax: bool = True, progress: bool = False) -> LinearFit:
    """Fit a logistic regression on ``x`` ``(examples, columns)`` with labels ``y`` in {0, 1}.

    The penalty strength is chosen by stratified ``folds``-fold cross-validated ROC AUC: the
    strongest (sparsest) one within ``tolerance`` of the best, then the model is refit on all of
    ``x``. ``balanced`` weights the classes equally, so 0.5 is a sensible threshold even when one
    class is rare. With ``relax`` (L1 only) the chosen columns are refit with a light L2 penalty
    (a relaxed lasso), so probabilities are not shrunk towards 0.5. ``fit.cv`` lists
    ``{"strength", "auc"}`` per strength tried. ``progress`` shows a bar over the
    cross-validation fits (strengths x folds) on stderr.
    """
    if penalty not in ("l1", "l2"):
        raise ClassifierError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    y = torch.as_tensor(y).float().flatten()
    if x.ndim != 2 or len(x) != len(y):
        raise ClassifierError(f"expected x (examples, columns) and one label per example, got x "
                              f"{tuple(x.shape)} and {len(y)} labels")
    if not torch.isfinite(x).all():
        raise ClassifierError("the inputs hold NaN or infinite values: check the activations (a model "
                              "in float16 may overflow; load it in float32)")
    if not ((y == 0) | (y == 1)).all():
        raise ClassifierError("labels must be 0 or 1")
    counts = [int((y == c).sum()) for c in (0, 1)]
    if min(counts) < folds:
        raise ClassifierError(f"each class needs at least {folds} examples for {folds}-fold "
                              f"cross-validation; got {counts[0]} negative and {counts[1]} positive")
    x = x.float()
    mean, std = _standardise(x)
    z = (x - mean) / std
    grid = list(strengths) if strengths is not None else _grid(z, y, penalty, balanced)
    cv = []
    bar = tqdm(total=len(grid) * folds, desc=f"cross-validating ({penalty})", unit="fit",
               disable=not progress, leave=False)
    with bar:
        for strength in grid:
            scores = torch.empty(len(y))
            for held in _folds(y, folds, seed):
                m, s = _standardise(x[~held])
                w, b = logistic_path((x[~held] - m) / s, y[~held], penalty, strength, balanced=balanced)
                scores[held] = ((x[held] - m) / s) @ w + b
                bar.update(1)
            cv.append({"strength": strength, "auc": roc_auc(scores, y)})
    best = max(c["auc"] for c in cv)
    chosen = max((c for c in cv if c["auc"] >= best - tolerance), key=lambda c: c["strength"])
    w, b = logistic_path(z, y, penalty, chosen["strength"], balanced=balanced)
    if penalty == "l1" and relax:
        w, b = _relaxed(z, y, w, balanced)
    return LinearFit(w, b, mean, std, penalty, chosen["strength"], cv)


def _relaxed(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, balanced: bool
             ) -> tuple[torch.Tensor, float]:
    """Refit the L1-chosen columns with a light L2 penalty: L1 picks, the refit sets the weights
    without the shrinkage towards 0.5 that a strong L1 leaves in the probabilities."""
    support = torch.nonzero(w).flatten()
    if not len(support):
        return w, logistic_path(z[:, :0], y, "l2", RELAX_L2, balanced=balanced)[1]
    ws, b = logistic_path(z[:, support], y, "l2", RELAX_L2, balanced=balanced)
    out = torch.zeros_like(w)
    out[support] = ws
    return out, b


# -- pooling -------------------------------------------------------------------------------------
def _check_pools(pools: Sequence[str]) -> tuple[str, ...]:
    pools = tuple(pools)
    bad = [p for p in pools if p not in POOLS]
    if not pools or bad or len(set(pools)) != len(pools):
        raise ClassifierError(f"pools must be one or more of {POOLS} without repeats, got {list(pools)}")
    return pools


def pooled_features(acts: Sequence[torch.Tensor], dictionary: FeatureDictionary | None,
                    pools: Sequence[str] = POOLS, batch_positions: int = 4096) -> torch.Tensor:
    """``(examples, len(pools) * width)``: each example's features pooled over its positions.

    ``width`` is the dictionary's number of features, or the number of channels when
    ``dictionary`` is None (raw activations). An example with no positions pools to zeros.
    """
    pools = _check_pools(pools)
    if not len(acts):
        raise ClassifierError("no examples given")
    width = dictionary.d_features if dictionary is not None else acts[0].shape[-1]
    out = torch.zeros(len(acts), len(pools) * width)
    with torch.no_grad():
        for i, a in enumerate(acts):
            a = torch.as_tensor(a).float()
            if a.ndim != 2:
                raise ClassifierError(f"example {i}: expected (positions, channels), got {tuple(a.shape)}")
            if not len(a):
                continue
            f = a if dictionary is None else torch.cat(
                [dictionary.encode(chunk).float() for chunk in a.split(batch_positions)])
            for j, pool in enumerate(pools):
                out[i, j * width:(j + 1) * width] = f.amax(0) if pool == "max" else f.mean(0)
    return out


def dictionary_digest(dictionary: FeatureDictionary) -> str:
    """sha256 of the dictionary's tensors (as float32), so a classifier knows its exact dictionary."""
    digest = hashlib.sha256()
    for name, tensor in sorted(dictionary.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# -- the classifier ------------------------------------------------------------------------------
@dataclass
class Driver:
    """One feature's contribution to a decision (positive pushes towards the positive class)."""

    feature: int
    pool: str
    label: str
    value: float
    contribution: float
    fires_on: tuple[str, ...] = ()  # where the feature fired most on the training data


class FeatureClassifier:
    """A sparse linear read-out of pooled features at one site; see the module docstring.

    Attributes:
        info: the JSON part (classes, site, model, dictionary reference, columns, metrics...).
        dictionary: the feature dictionary, or None for a raw-activation classifier.
        columns: ``(k,)`` indices into the pooled vector (``pool_index * width + feature``).
        weight, mean, std, bias: the read-out over those columns.
    """

    def __init__(self, info: dict[str, Any], dictionary: FeatureDictionary | None,
                 columns: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 bias: float):
        self.info, self.dictionary = info, dictionary
        self.columns, self.weight = columns.long(), weight.float()
        self.mean, self.std, self.bias = mean.float(), std.float(), float(bias)

    # -- reading --------------------------------------------------------------------------------
    @property
    def pools(self) -> tuple[str, ...]:
        return tuple(self.info["pools"])

    @property
    def width(self) -> int:
        return int(self.info["width"])

    @property
    def site(self) -> str:
        return str(self.info["site"])

    @property
    def site_norm(self) -> float:
        return float(self.info["site_norm"])

    @property
    def classes(self) -> tuple[str, str]:
        """(negative class name, positive class name)."""
        return tuple(self.info["classes"])  # type: ignore[return-value]

    @property
    def threshold(self) -> float:
        return float(self.info.get("threshold", 0.5))

    @property
    def model(self) -> ModelFingerprint | None:
        data = self.info.get("model")
        return ModelFingerprint.from_json(data) if data else None

    def column_name(self, column: int) -> tuple[int, str, str]:
        """(feature index, pool, label) of a pooled column."""
        return _column_name(column, self.width, self.pools, self.dictionary)

    def describe(self) -> str:
        source = (f"{len(self.columns)} of {self.dictionary.d_features} features of "
                  f"{self.info['dictionary']['ref']}" if self.dictionary is not None
                  else f"{len(self.columns)} raw channels")
        return (f"classifier {self.info.get('name', '')!r}: {self.classes[1]} vs {self.classes[0]} "
                f"from {source} at {self.site} ({'+'.join(self.pools)} pooled)")

    # -- scoring --------------------------------------------------------------------------------
    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        x = pooled.float()[:, self.columns]
        return ((x - self.mean) / self.std) @ self.weight + self.bias

    def probabilities(self, acts: Sequence[torch.Tensor]) -> torch.Tensor:
        """P(positive class) per example; each example is ``(positions, channels)``."""
        return torch.sigmoid(self.logits_from_pooled(pooled_features(acts, self.dictionary, self.pools)))

    def drivers(self, pooled_row: torch.Tensor, top: int = 3) -> list[Driver]:
        """The ``top`` columns that moved this example's decision most, largest |contribution| first."""
        x = pooled_row.float()[self.columns]
        contrib = (x - self.mean) / self.std * self.weight
        order = torch.argsort(contrib.abs(), descending=True, stable=True)[:top]
        out = []
        for i in order.tolist():
            feature, pool, label = self.column_name(int(self.columns[i]))
            fires_on = tuple(self._fires_on().get((feature, pool), ()))
            out.append(Driver(feature, pool, label, float(x[i]), float(contrib[i]), fires_on))
        return out

    def _fires_on(self) -> dict[tuple[int, str], list[str]]:
        return {(c["feature"], c["pool"]): c.get("fires_on", []) for c in self.info.get("columns", [])}

    def check_compatible(self, model: ModelFingerprint | None, site: str, channels: int | None) -> None:
        """Raise :class:`DictionaryMismatchError` unless this classifier fits ``model`` at ``site``."""
        name = self.info.get("name", "classifier")
        if site != self.site:
            raise DictionaryMismatchError(f"classifier {name!r} reads site {self.site!r}, not {site!r}")
        if channels is not None and channels != int(self.info["channels"]):
            raise DictionaryMismatchError(
                f"classifier {name!r} expects {self.info['channels']} channels at {site!r}, the model "
                f"has {channels}: it was fitted on another model")
        own = self.model
        if own is not None and model is not None and not own.matches(model):
            raise DictionaryMismatchError(
                f"classifier {name!r} was fitted on model {own.short()}, this model is "
                f"{model.short()}: fit it again on this model (polysteer classify fit)")

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``classifier.json`` + ``classifier.safetensors`` into folder ``path``, atomically."""
        tensors = {"columns": self.columns, "weight": self.weight, "mean": self.mean,
                   "std": self.std, "bias": torch.tensor([self.bias])}
        return write_folder(Path(path), lambda tmp: (
            write_tensors(tmp / "classifier.safetensors", tensors),
            write_json(tmp / "classifier.json", self.info)))


def _column_name(column: int, width: int, pools: Sequence[str], dictionary: FeatureDictionary | None
                 ) -> tuple[int, str, str]:
    feature, pool = column % width, pools[column // width]
    return feature, pool, dictionary.labels[feature] if dictionary is not None else f"channel {feature}"


def build_info(*, name: str, classes: tuple[str, str], site: str, site_norm: float, channels: int,
               model: ModelFingerprint | None, dictionary: FeatureDictionary | None,
               dictionary_ref: str | None, pools: Sequence[str], columns: list[dict[str, Any]],
               fit: LinearFit, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON half of a classifier folder."""
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "name": name, "classes": list(classes),
        "site": site, "site_norm": site_norm, "channels": channels,
        "model": model.to_json() if model else None,
        "dictionary": None if dictionary is None else {
            "ref": dictionary_ref, "digest": dictionary_digest(dictionary),
            "kind": dictionary.kind, "d_features": dictionary.d_features},
        "width": dictionary.d_features if dictionary is not None else channels,
        "pools": list(pools), "threshold": 0.5, "penalty": fit.penalty, "strength": fit.strength,
        "cv": fit.cv, "columns": columns, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(extra or {}),
    }


def from_fit(fit: LinearFit, *, name: str, classes: tuple[str, str], site: str, site_norm: float,
             channels: int, model: ModelFingerprint | None, dictionary: FeatureDictionary | None,
             dictionary_ref: str | None, pools: Sequence[str], candidates: torch.Tensor | None = None,
             extra: dict[str, Any] | None = None) -> FeatureClassifier:
    """A :class:`FeatureClassifier` keeping only the nonzero weights of ``fit``.

    ``candidates`` maps the fit's columns to pooled columns (when the fit saw a subset of them).
    """
    keep = torch.nonzero(fit.weight != 0).flatten()
    mapped = keep if candidates is None else candidates[keep]
    width = dictionary.d_features if dictionary is not None else channels
    columns = []
    for i, column in enumerate(mapped.tolist()):
        feature, pool, label = _column_name(column, width, pools, dictionary)
        columns.append({"feature": feature, "pool": pool, "label": label,
                        "weight": round(float(fit.weight[keep[i]]), 6)})
    columns.sort(key=lambda c: -abs(c["weight"]))
    info = build_info(name=name, classes=classes, site=site, site_norm=site_norm, channels=channels,
                      model=model, dictionary=dictionary, dictionary_ref=dictionary_ref, pools=pools,
                      columns=columns, fit=fit, extra=extra)
    return FeatureClassifier(info, dictionary, mapped, fit.weight[keep], fit.mean[keep], fit.std[keep],
                             fit.bias)


def load_classifier(path: str | os.PathLike, plugins: Any = None) -> FeatureClassifier:
    """Load a classifier folder; its dictionary is resolved by name and checked by digest.

    Every field and tensor is checked here (types, shapes, finite numbers), so a damaged folder
    gives a :class:`CorruptFileError` naming the file and the field, never a ``KeyError`` later.
    Files are read from one version of the folder (a concurrent ``fit`` never mixes in).
    """
    path = Path(path)
    return read_folder(path, lambda real: _load_classifier_files(real, path, plugins))


def _load_classifier_files(real: Path, path: Path, plugins: Any) -> FeatureClassifier:
    from polysteer.features.dictionary import resolve_dictionary

    meta_path = real / "classifier.json"
    info = read_meta(real, "classifier.json", FORMAT, FORMAT_VERSION,
                     "fit one with `polysteer classify fit`", shown=path, what="polysteer classifier")
    _check_info(info, meta_path)
    tensors_path = real / "classifier.safetensors"
    tensors = read_tensors(tensors_path)
    _check_tensors(tensors, info, path / "classifier.safetensors")
    dictionary = None
    ref = info.get("dictionary")
    if ref is not None:
        dictionary = resolve_dictionary(ref["ref"], path.parent, plugins)
        if dictionary_digest(dictionary) != ref["digest"]:
            raise DictionaryMismatchError(
                f"classifier {path} was fitted on another version of dictionary {ref['ref']!r} "
                "(its weights changed): fit the classifier again")
        if dictionary.d_features != int(info["width"]):
            raise CorruptFileError(f"{meta_path}: width {info['width']} does not match dictionary "
                                   f"{ref['ref']!r} ({dictionary.d_features} features); fit again")
    return FeatureClassifier(info, dictionary, tensors["columns"], tensors["weight"], tensors["mean"],
                             tensors["std"], float(tensors["bias"][0]))


def _check_info(info: dict[str, Any], where: Path) -> None:
    """Every field a classifier reads later, checked now (names the field and the fix)."""

    def bad(key: str, expected: str) -> CorruptFileError:
        return CorruptFileError(f"{where}: {key}: expected {expected}, got {info.get(key)!r}; the "
                                "file is damaged: fit the classifier again")

    for key in ("site", "classes", "pools", "width", "channels", "site_norm"):
        if key not in info:
            raise CorruptFileError(f"{where}: {key}: missing; the file is damaged: fit the "
                                   "classifier again")
    classes = info["classes"]
    if not (isinstance(classes, list) and len(classes) == 2
            and all(isinstance(c, str) for c in classes)):
        raise bad("classes", "two class names")
    if not isinstance(info["site"], str):
        raise bad("site", "a site name")
    pools = info["pools"]
    if not (isinstance(pools, list) and pools and all(p in POOLS for p in pools)):
        raise bad("pools", f"a list of {' / '.join(POOLS)}")
    for key in ("width", "channels"):
        value = info[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(key, "a positive integer")
    finite(info["site_norm"], f"{where}: site_norm", low=0.0, error=CorruptFileError)
    finite(info.get("threshold", 0.5), f"{where}: threshold", low=0.0, high=1.0,
           error=CorruptFileError)
    model = info.get("model")
    ref = info.get("dictionary")
    try:
        if model is not None:
            ModelFingerprint.from_json(model)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise bad("model", "a model fingerprint") from None
    if ref is not None and not (isinstance(ref, dict) and isinstance(ref.get("ref"), str)
                                and isinstance(ref.get("digest"), str)):
        raise bad("dictionary", "{ref: NAME, digest: HEX} or null")
    columns = info.get("columns", [])
    if not isinstance(columns, list) or not all(
            isinstance(c, dict) and isinstance(c.get("feature"), int) and isinstance(c.get("pool"), str)
            and isinstance(c.get("fires_on", []), list) for c in columns):
        raise bad("columns", "a list of {feature, pool, label, weight}")


def _check_tensors(tensors: dict[str, torch.Tensor], info: dict[str, Any], where: Path) -> None:
    missing = {"columns", "weight", "mean", "std", "bias"} - set(tensors)
    if missing:
        raise CorruptFileError(f"{where} lacks {sorted(missing)}; fit again")
    n = tensors["columns"].numel()
    for name in ("columns", "weight", "mean", "std"):
        t = tensors[name]
        if t.ndim != 1 or t.numel() != n:
            raise CorruptFileError(f"{where}: {name} has shape {tuple(t.shape)}, expected ({n},); "
                                   "the file is damaged: fit the classifier again")
        if name != "columns" and not torch.isfinite(t.float()).all():
            raise CorruptFileError(f"{where}: {name} holds NaN or infinite values; fit again")
    if tensors["columns"].is_floating_point() or tensors["bias"].numel() != 1 \
            or not torch.isfinite(tensors["bias"].float()).all():
        raise CorruptFileError(f"{where}: columns must be integers and bias one finite number; "
                               "fit the classifier again")
    columns = tensors["columns"].long()
    limit = int(info["width"]) * len(info["pools"])
    if n and (int(columns.min()) < 0 or int(columns.max()) >= limit):
        raise CorruptFileError(f"{where}: columns outside [0, {limit}) (width x pools); fit again")
    if (tensors["std"].float() <= 0).any():
        raise CorruptFileError(f"{where}: std must be positive; fit the classifier again")


def classifier_search_path(base_dir: Path | None = None) -> list[Path]:
    """Folders a classifier name is looked up in, in order."""
    from polysteer.io.paths import home
    from polysteer.plugin.manager import current_plugin_manager

    return [*([base_dir] if base_dir else []), Path.cwd(), home() / "classifiers",
            *current_plugin_manager().shipped_folders("classifier")]


def resolve_classifier(ref: str | os.PathLike | FeatureClassifier, base_dir: Path | None = None,
                       plugins: Any = None) -> FeatureClassifier:
    """A classifier from an object, a folder path, or a name in :func:`classifier_search_path`."""
    if isinstance(ref, FeatureClassifier):
        return ref
    for folder in classifier_search_path(base_dir):
        if (folder / ref / "classifier.json").is_file():
            return load_classifier(folder / ref, plugins)
    searched = ", ".join(str(f) for f in classifier_search_path(base_dir))
    raise FileNotFoundError(f"classifier {str(ref)!r} not found; looked in: {searched}. Fit one "
                            "with `polysteer classify fit` or give its folder path")


# -- streaming (rule triggers) -------------------------------------------------------------------
class StreamingScore:
    """P(positive) per batch row over all positions seen so far, updated with tensor ops only.

    Positions are pooled the way the classifier was fitted (running max and/or mean); positions
    whose norm exceeds :data:`OUTLIER_FACTOR` site norms (attention sinks) are left out.
    """

    def __init__(self, classifier: FeatureClassifier):
        self.classifier = classifier
        width = classifier.width
        self.feature_of = classifier.columns % width
        self.is_max = torch.tensor([classifier.pools[int(p)] == "max" for p in classifier.columns // width])
        self.readout = (classifier.mean, classifier.std, classifier.weight)
        self.running_max: torch.Tensor | None = None
        self.running_sum: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def reset(self, rows: int, device: torch.device) -> None:
        k = len(self.feature_of)
        self.running_max = torch.full((rows, k), -math.inf, device=device)
        self.running_sum = torch.zeros(rows, k, device=device)
        self.count = torch.zeros(rows, 1, device=device)
        self.feature_of, self.is_max = self.feature_of.to(device), self.is_max.to(device)
        self.readout = tuple(t.to(device) for t in self.readout)  # once, not on every step
        self.seen = torch.zeros(rows, dtype=torch.bool, device=device)

    def update(self, x: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """Feed new positions ``(B, P, C)`` (``real``: ``(B, P)`` bool, False for padding); return the
        ``(B,)`` probability (0 before any position)."""
        if self.count is None or len(self.count) != x.shape[0] or self.count.device != x.device:
            self.reset(x.shape[0], x.device)
        if x.shape[1]:
            self._add(x, real)
        mean = self.running_sum / self.count.clamp_min(1)
        pooled = torch.where(self.is_max, self.running_max, mean)
        pooled = torch.where(self.seen[:, None], pooled, torch.zeros_like(pooled))
        centre, spread, weight = self.readout
        prob = torch.sigmoid((pooled - centre) / spread @ weight + self.classifier.bias)
        return torch.where(self.seen, prob, torch.zeros_like(prob))

    def _add(self, x: torch.Tensor, real: torch.Tensor | None) -> None:
        clf = self.classifier
        keep = x.norm(dim=-1) <= OUTLIER_FACTOR * clf.site_norm
        if real is not None:
            keep = keep & real
        feats = x if clf.dictionary is None else clf.dictionary.encode(x)
        f = feats.float()[..., self.feature_of]
        dropped = ~keep[..., None]
        self.running_max = torch.maximum(self.running_max, f.masked_fill(dropped, -math.inf).amax(1))
        self.running_sum = self.running_sum + f.masked_fill(dropped, 0).sum(1)
        self.count = self.count + keep.sum(1, keepdim=True)
        self.seen = self.seen | keep.any(1)
