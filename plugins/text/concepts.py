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
fingerprint and site through the core concept builder (:func:`polysteer.workflows.build_concept`,
with the text plugin's renderer ``text`` and row selector ``text-tokens``); activations of every
real token are used except attention sinks (the first token, and any token whose norm is far above
the site's median: see :func:`~polysteer.plugins.text.harvest.keep_mask`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from polysteer import DirectionSet
from polysteer.errors import ConfigError
from polysteer.io import finite, load_yaml
from polysteer.plugins.text.harvest import OUTLIER_FACTOR, TextRenderer, keep_mask, text_tokens
from polysteer.workflows import ConceptRecipe, batched, collect
from polysteer.workflows import build_concept as core_build_concept

METHODS = ("mean-diff", "pca")
__all__ = ["METHODS", "OUTLIER_FACTOR", "ConceptSpec", "build_concept", "harvest_tokens", "keep_mask",
           "token_activations"]


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
        data = load_yaml(path, "concept spec")  # regular UTF-8 file, alias/depth limits
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
        for key in ("name", "site", "method", "template", "description"):
            if key in data and not isinstance(data[key], str):
                raise ConfigError(f"{path}: {key}: expected text, got {data[key]!r}")
        for key in ("positive", "negative"):
            if not (isinstance(data[key], list) and data[key]
                    and all(isinstance(t, str) for t in data[key])):
                raise ConfigError(f"{path}: {key}: expected a non-empty list of texts")
        if "intensity" in data:
            finite(data["intensity"], f"{path}: intensity", low=-1000.0, high=1000.0)
        if data.get("method", "mean-diff") not in METHODS:
            raise ConfigError(f"{path}: method: {data['method']!r} is not one of {METHODS}")
        if data.get("method") == "pca" and len(data["positive"]) != len(data["negative"]):
            raise ConfigError(f"{path}: pca needs as many positive as negative examples (pairs)")
        extra = {"words": data.pop("words")} if "words" in data else {}
        return ConceptSpec(**data, extra=extra)

    def recipe(self) -> ConceptRecipe:
        """The core :class:`~polysteer.workflows.ConceptRecipe` this spec builds: renderer ``text``
        (left padding, no truncation), selector ``text-tokens``, 8 texts per batch, the site norm
        the median over positive and negative tokens; ``pca`` stretched to the mean difference."""
        positive, negative = self.texts()
        return ConceptRecipe(
            name=self.name, site=self.site, renderer="text", rows="text-tokens", method=self.method,
            positive=positive, negative=negative, batch_size=8, scale="norm", norm_from="all",
            details={"description": self.description, "examples": len(positive) + len(negative),
                     "recommended_intensity": self.intensity, **self.extra})

    def texts(self) -> tuple[list[str], list[str]]:
        """Positive and negative examples, formatted into the template."""
        return ([self.template.format(t) for t in self.positive],
                [self.template.format(t) for t in self.negative])


def harvest_tokens(adapter: Any, texts: list[str], sites: list[str], batch_size: int = 8,
                   progress: bool = False, outlier_factor: float = OUTLIER_FACTOR
                   ) -> dict[str, list[torch.Tensor]]:
    """Per site, per text, the ``(tokens, channels)`` activations, all sites in one pass each batch.

    The core harvest (:func:`polysteer.workflows.collect`) with renderer ``text`` (left padding, no
    truncation) and selector ``text-tokens``: no padding, no first token, no attention sinks.
    """
    got = collect(adapter, batched(list(texts), batch_size), sites, renderer=TextRenderer(),
                  rows=text_tokens(outlier_factor=outlier_factor), progress=progress,
                  total_items=len(texts), desc="harvesting activations")
    return {site: got.per_example(site) for site in sites}


def token_activations(adapter: Any, texts: list[str], site: str, batch_size: int = 8,
                      progress: bool = False) -> list[torch.Tensor]:
    """Per text, the ``(tokens, channels)`` activations at ``site`` (see :func:`harvest_tokens`)."""
    return harvest_tokens(adapter, texts, [site], batch_size, progress)[site]


def build_concept(adapter: Any, spec: ConceptSpec, progress: bool = False) -> DirectionSet:
    """Build the concept's direction set on ``adapter``'s model at ``spec.site`` (core builder)."""
    return core_build_concept(adapter, spec.recipe(), progress=progress)
