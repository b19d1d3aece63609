"""Direction-set math: contrast (difference of means), PCA of differences, linear probes.

Everything here sees activations only (``(N, C)`` token rows or ``(B, P, C)``), so it serves text,
images and voice alike. The one concept builder that renders examples and harvests them through
the plugins' registered parts is :mod:`polysteer.workflows.concept_builder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from polysteer.features.dictionary import DictionaryInfo, DirectionSet
from polysteer.features.fingerprint import ModelFingerprint


def token_rows(x: torch.Tensor, skip_first: bool = True) -> torch.Tensor:
    """``(B, P, C)`` -> ``(N, C)`` rows, position 0 dropped (attention sinks live there)."""
    if x.ndim == 2:
        return x
    if skip_first and x.shape[1] > 1:
        x = x[:, 1:]
    return x.reshape(-1, x.shape[-1])


def median_norm(x: torch.Tensor) -> float:
    """Median L2 norm of token rows (position 0 left out): a site's typical activation norm."""
    value = token_rows(x).float().norm(dim=-1).median().item()
    if not math.isfinite(value) or value <= 0:
        raise ValueError("activations have no finite non-zero norm; check the inputs")
    return value


def difference_of_means(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``mean(positive) - mean(negative)`` over token rows."""
    return token_rows(positive).float().mean(0) - token_rows(negative).float().mean(0)


def pca_of_differences(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """First principal component of paired differences ``positive[i] - negative[i]``.

    Inputs are per-example vectors ``(N, C)`` (e.g. mean-pooled); the sign is chosen to agree with
    the mean difference so that "more of the concept" is positive.
    """
    if positive.shape != negative.shape or positive.ndim != 2:
        raise ValueError("PCA of differences needs paired (N, C) inputs of equal shape, got "
                         f"{tuple(positive.shape)} and {tuple(negative.shape)}")
    diffs = positive.float() - negative.float()
    if len(diffs) < 2:
        return diffs[0]
    _, _, v = torch.linalg.svd(diffs - diffs.mean(0), full_matrices=False)
    pc = v[0]
    # with few pairs the centred differences can be degenerate: fall back to the mean
    if not torch.isfinite(pc).all() or pc.norm() == 0:
        return diffs.mean(0)
    return pc if pc @ diffs.mean(0) >= 0 else -pc


def linear_probe(acts: torch.Tensor, values: torch.Tensor, ridge: float = 1e-2) -> torch.Tensor:
    """Ridge-regression direction predicting a measured attribute from ``(N, C)`` activations."""
    x = acts.float() - acts.float().mean(0)
    y = values.float() - values.float().mean()
    c = x.shape[1]
    gram = x.T @ x + ridge * x.pow(2).sum() / max(len(x), 1) * torch.eye(c)
    return torch.linalg.solve(gram, x.T @ y)


def direction_set(vectors: Sequence[torch.Tensor], labels: Sequence[str], *, site: str,
                  site_norm: float, model: ModelFingerprint | None, method: str,
                  scales: Sequence[float] | None = None, details: dict | None = None
                  ) -> DirectionSet:
    """Pack concept vectors into a :class:`DirectionSet` tied to ``model`` and ``site``.

    A feature's scale (its typical read-out) defaults to the norm of its raw vector: for a
    difference of means that is how far the concept moves the activation.
    """
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in vectors])
    if scales is None:
        scales = stacked.norm(dim=1)
    info = DictionaryInfo(model=model, site=site, site_norm=float(site_norm), method=method,
                          details=details or {})
    return DirectionSet(stacked, info, list(labels), torch.as_tensor(scales, dtype=torch.float32))
