"""Find features in a dictionary: by a text query over labels, by contrasting examples, by similarity.

Modality-agnostic: the functions see a :class:`FeatureDictionary` and activations
``(positions, channels)`` per example, whatever produced them.

* :func:`search_labels`: features whose label matches a query;
* :func:`contrast_features`: features that fire most on these examples and least on those (the
  "spam features" recipe: positives = spam texts, negatives = ordinary texts);
* :func:`similar_features`: features whose decoder direction points the same way as another's.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import NamedTuple

import torch

from polysteer.features.classifier import POOLS
from polysteer.features.dictionary import FeatureDictionary


class LabelMatch(NamedTuple):
    index: int
    label: str
    score: float


class ContrastMatch(NamedTuple):
    index: int
    label: str
    score: float
    pos_mean: float
    neg_mean: float


class SimilarMatch(NamedTuple):
    index: int
    label: str
    score: float


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def search_labels(dictionary: FeatureDictionary, query: str, top: int = 10) -> list[LabelMatch]:
    """Features whose labels best match ``query``, best first, as ``(index, label, score)``.

    ``score`` in [0, 1] is the larger of the fraction of the query's words found among the
    label's words (case-insensitive; a word also matches a label word that starts with it, so
    ``happ`` finds ``happy``) and the :class:`difflib.SequenceMatcher` ratio of the lower-cased
    strings. Features scoring 0 are left out; ties keep index order.
    """
    q = query.lower().strip()
    q_words = _tokens(q)
    matches = []
    for i, label in enumerate(dictionary.labels):
        low = label.lower()
        words = _tokens(low)
        overlap = (sum(any(w.startswith(qw) for w in words) for qw in q_words) / len(q_words)
                   if q_words else 0.0)
        ratio = difflib.SequenceMatcher(None, q, low).ratio() if q else 0.0
        score = max(overlap, ratio)
        if score > 0:
            matches.append(LabelMatch(i, label, round(score, 6)))
    matches.sort(key=lambda m: (-m.score, m.index))
    return matches[:top]


def pool_activations(dictionary: FeatureDictionary, acts: Sequence[torch.Tensor], pool: str = "max",
                     chunk: int = 4096) -> torch.Tensor:
    """Feature values pooled per example: ``(examples, d_features)``.

    Each item of ``acts`` is one example's activations ``(positions, channels)`` (a 1-D tensor is
    one position); its feature values are reduced over positions by ``max`` or ``mean``. All
    examples' positions are encoded together, ``chunk`` positions at a time.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if not len(acts):
        raise ValueError("no examples given")
    rows = []
    for a in acts:
        a = torch.as_tensor(a).float()
        a = a[None] if a.ndim == 1 else a
        if a.ndim != 2 or a.shape[0] == 0:
            raise ValueError(f"each example must be (positions, channels) with positions > 0, "
                             f"got shape {tuple(a.shape)}")
        rows.append(a)
    lengths = torch.tensor([len(a) for a in rows])
    owner = torch.repeat_interleave(torch.arange(len(rows)), lengths)
    with torch.no_grad():
        f = torch.cat([dictionary.encode(part.to(dictionary.device)).float().cpu()
                       for part in torch.cat(rows).split(chunk)])
        out = torch.zeros(len(rows), f.shape[1])
        if pool == "max":
            out.scatter_reduce_(0, owner[:, None].expand_as(f), f, "amax", include_self=False)
        else:
            out.index_add_(0, owner, f)
            out /= lengths[:, None]
    return out


def correlations(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each feature column ``(N, F)`` with ``values`` ``(N,)`` (NaN rows
    left out; 0 for a feature that never varies)."""
    ok = ~values.isnan()
    f, v = features[ok].float(), values[ok].float()
    f, v = f - f.mean(0), v - v.mean()
    denom = f.norm(dim=0) * v.norm()
    return torch.where(denom > 0, (f * v[:, None]).sum(0) / denom.clamp_min(1e-12), torch.zeros(()))


def contrast_features(dictionary: FeatureDictionary, positive_acts: Sequence[torch.Tensor],
                      negative_acts: Sequence[torch.Tensor], top: int = 10, pool: str = "max",
                      ) -> list[ContrastMatch]:
    """Features that fire most on the positive examples and least on the negative ones.

    Each example is pooled (:func:`pool_activations`); per feature,
    ``score = (mean_pos - mean_neg) / (pooled_std + eps)`` where ``pooled_std`` is the square root
    of the average of the two groups' variances (population variance, so one example per group
    works) and ``eps = 1e-6 + 1e-3 * max |mean|`` over both groups keeps features that never vary
    from dividing by zero. It is a standardised mean difference (Cohen's d), so features on
    different scales compare. Returns the ``top`` features with ``score > 0``, best first, as
    ``(index, label, score, pos_mean, neg_mean)``; ties keep index order.
    """
    pos = pool_activations(dictionary, positive_acts, pool)
    neg = pool_activations(dictionary, negative_acts, pool)
    return contrast_pooled(dictionary, pos, neg, top)


def contrast_pooled(dictionary: FeatureDictionary, pos: torch.Tensor, neg: torch.Tensor, top: int = 10
                    ) -> list[ContrastMatch]:
    """:func:`contrast_features` on already pooled feature values ``(examples, d_features)`` of
    each side (from :func:`pool_activations`)."""
    if not len(pos) or not len(neg):
        raise ValueError("contrasting needs at least one example on each side")
    mean_p, mean_n = pos.mean(0), neg.mean(0)
    std = ((pos.var(0, unbiased=False) + neg.var(0, unbiased=False)) / 2).sqrt()
    eps = 1e-6 + 1e-3 * torch.maximum(mean_p.abs(), mean_n.abs())
    score = (mean_p - mean_n) / (std + eps)
    values = score.tolist()
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return [ContrastMatch(i, dictionary.labels[i], values[i], mean_p[i].item(), mean_n[i].item())
            for i in order[:top] if values[i] > 0]


def similar_features(dictionary: FeatureDictionary, feature: int | str, top: int = 10,
                     ) -> list[SimilarMatch]:
    """Features whose decoder directions are most similar (cosine) to ``feature``'s, best first.

    ``feature`` is an index or a label; the feature itself is left out. Returns
    ``(index, label, cosine)``; ties keep index order.
    """
    index = dictionary.feature_index(feature)
    with torch.no_grad():
        d = dictionary.directions.detach().float().cpu()
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = d @ d[index]
    order = sorted((i for i in range(len(cos)) if i != index), key=lambda i: (-cos[i].item(), i))
    return [SimilarMatch(i, dictionary.labels[i], cos[i].item()) for i in order[:top]]
