"""Concepts from examples for text models: harvest activations over texts, contrast them.

A concept spec (YAML) lists positive and negative examples (paired by position, or generated from
a template), the site, and the recommended intensity::

    name: formal
    site: blocks.12.resid_post
    method: mean-diff            # or pca (of paired differences)
    intensity: 0.3               # recommended
    template: "{}"               # optional: each example is formatted into it
    positive: ["I would be delighted to assist you.", ...]
    negative: ["sure, happy to help lol", ...]

``build_concept`` turns it into a one-feature :class:`~polysteer.DirectionSet` tied to the model's
fingerprint and site; activations of every real token are used except attention sinks (the first
token, and any token whose norm is far above the site's median: see :func:`harvest_tokens`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from polysteer import DirectionSet, steer
from polysteer.concepts import difference_of_means, direction_set, median_norm, pca_of_differences
from polysteer.errors import ConfigError

METHODS = ("mean-diff", "pca")
OUTLIER_FACTOR = 10.0


@dataclass
class ConceptSpec:
    """What a concept is made of; see the module docstring for the YAML form."""

    name: str
    site: str
    positive: list[str]
    negative: list[str]
    method: str = "mean-diff"
    intensity: float = 0.3
    template: str = "{}"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def load(path: str | os.PathLike) -> ConceptSpec:
        """Read and validate a concept spec YAML file."""
        data = yaml.safe_load(Path(path).read_text())
        allowed = {"name", "site", "positive", "negative", "method", "intensity", "template",
                   "description", "words"}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping")
        unknown = set(data) - allowed
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        for key in ("name", "site", "positive", "negative"):
            if key not in data:
                raise ConfigError(f"{path}: {key}: missing (required)")
        if data.get("method", "mean-diff") not in METHODS:
            raise ConfigError(f"{path}: method: {data['method']!r} is not one of {METHODS}")
        if data.get("method") == "pca" and len(data["positive"]) != len(data["negative"]):
            raise ConfigError(f"{path}: pca needs as many positive as negative examples (pairs)")
        extra = {"words": data.pop("words")} if "words" in data else {}
        return ConceptSpec(**data, extra=extra)

    def texts(self) -> tuple[list[str], list[str]]:
        """Positive and negative examples, formatted into the template."""
        return ([self.template.format(t) for t in self.positive],
                [self.template.format(t) for t in self.negative])


def keep_mask(acts: torch.Tensor, attention_mask: torch.Tensor,
              outlier_factor: float = OUTLIER_FACTOR) -> torch.Tensor:
    """``(B, P)`` bool: real tokens, not the first of each text, not an attention sink.

    A sink is a token whose norm exceeds ``outlier_factor`` times the median norm of the other
    kept tokens of the batch (SmolLM2's first token is ~170x the median; later sinks also occur
    and would dominate every mean).
    """
    mask = attention_mask.bool().to(acts.device)
    keep = mask & ~(mask.int().cumsum(1) == 1)
    if keep.any():
        norms = acts.float().norm(dim=-1)
        keep &= norms <= outlier_factor * norms[keep].median()
    return keep


def harvest_tokens(adapter: Any, texts: list[str], sites: list[str], batch_size: int = 8,
                   progress: bool = False, outlier_factor: float = OUTLIER_FACTOR
                   ) -> dict[str, list[torch.Tensor]]:
    """Per site, per text, the ``(tokens, channels)`` activations, all sites in one pass each batch.

    Only the tokens :func:`keep_mask` keeps: no padding, no first token, no attention sinks.
    """
    out: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    batches = range(0, len(texts), batch_size)
    for start in tqdm(batches, desc="harvesting activations", disable=not progress, unit="batch"):
        with steer(adapter, None, capture=sites) as run:
            _, mask = adapter.forward(texts[start:start + batch_size])
        for site in sites:
            acts = run.captured(site).float().cpu()
            keep = keep_mask(acts, mask.cpu(), outlier_factor)
            out[site].extend(row[k] for row, k in zip(acts, keep, strict=True))
    return out


def token_activations(adapter: Any, texts: list[str], site: str, batch_size: int = 8,
                      progress: bool = False) -> list[torch.Tensor]:
    """Per text, the ``(tokens, channels)`` activations at ``site`` (see :func:`harvest_tokens`)."""
    return harvest_tokens(adapter, texts, [site], batch_size, progress)[site]


def build_concept(adapter: Any, spec: ConceptSpec, progress: bool = False) -> DirectionSet:
    """Build the concept's direction set on ``adapter``'s model at ``spec.site``."""
    positive, negative = spec.texts()
    pos = token_activations(adapter, positive, spec.site, progress=progress)
    neg = token_activations(adapter, negative, spec.site, progress=progress)
    if spec.method == "pca":
        vector = pca_of_differences(torch.stack([p.mean(0) for p in pos]),
                                    torch.stack([n.mean(0) for n in neg]))
        vector = vector * difference_of_means(torch.cat(pos), torch.cat(neg)).norm()
    else:
        vector = difference_of_means(torch.cat(pos), torch.cat(neg))
    return direction_set(
        [vector], [spec.name], site=spec.site, site_norm=median_norm(torch.cat(pos + neg)),
        model=adapter.model_fingerprint, method=spec.method,
        details={"description": spec.description, "examples": len(positive) + len(negative),
                 "recommended_intensity": spec.intensity, **spec.extra})
