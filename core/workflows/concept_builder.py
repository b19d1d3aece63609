"""The one concept builder: examples of any modality, or examples with a measured attribute, become
a :class:`~polysteer.features.dictionary.DirectionSet`.

A :class:`ConceptRecipe` (contrastive examples, or examples with a measured attribute) is rendered
and harvested through :func:`polysteer.workflows.harvesting.collect` with the renderer, row selector and
attribute the plugins registered, then turned into a :class:`DirectionSet` by
:func:`contrast_concept` or :func:`probe_concept` with the math of :mod:`polysteer.features.concepts`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from polysteer.features.concepts import (
    difference_of_means,
    direction_set,
    linear_probe,
    pca_of_differences,
)
from polysteer.features.dictionary import DirectionSet
from polysteer.features.fingerprint import ModelFingerprint
from polysteer.plugin.manager import current_plugin_manager

if TYPE_CHECKING:  # the harvest imports tqdm and safetensors: only when a concept is built
    from polysteer.workflows.harvesting import Harvested


# -- one concept builder: examples or a measured attribute -> DirectionSet -----------------------
METHODS = ("mean-diff", "pca", "probe")
SCALES = ("norm", "projection")
NORM_FROM = ("all", "positive", "negative")


def contrast_vector(method: str, positive: Harvested, negative: Harvested, site: str,
                    scale: str = "norm") -> tuple[torch.Tensor, float | None]:
    """``(vector, scale or None)`` from positive vs negative rows at ``site``.

    ``mean-diff``: the difference of the mean rows. ``pca``: the first principal component of the
    paired differences of per-example mean rows, signed towards the mean difference; with
    ``scale="norm"`` it is stretched to the mean difference's length (the feature's scale is then
    that length), with ``scale="projection"`` the scale is the mean difference's projection on it.
    ``None`` means "the vector's own norm".
    """
    dom = difference_of_means(positive.rows[site], negative.rows[site])
    if method == "mean-diff":
        return dom, None
    if method != "pca":
        raise ValueError(f"method {method!r}: a contrast is 'mean-diff' or 'pca'")
    pc = pca_of_differences(positive.example_means(site), negative.example_means(site))
    if scale == "norm":
        return pc * dom.norm(), None
    return pc, float(dom @ (pc / pc.norm()))


def probe_vector(examples: Harvested, site: str, values: str, *, ridge: float = 1e-2,
                 scale: str = "norm", channels: int | None = None
                 ) -> tuple[torch.Tensor, float | None, float]:
    """``(vector, scale or None, r)``: a ridge probe from the rows at ``site`` to their ``values``.

    Rows whose value is NaN (unvoiced frames...) are left out. ``channels`` limits the probe to the
    first ``channels`` channels (the others get weight 0). ``r`` is the probe's correlation with
    the values on the training rows. ``scale="norm"``: the raw weights (scale = their norm);
    ``"projection"``: the unit direction with the gap between the mean read-outs of the rows in the
    top and bottom halves of the values as its scale (intensity 1 moves an example about that far).
    """
    x, y = examples.rows[site], examples.values[site][values]
    ok = ~y.isnan()
    x, y = x[ok], y[ok]
    part = x if channels is None else x[:, :channels]
    w = linear_probe(part, y, ridge=ridge)
    pred = (part - part.mean(0)) @ w
    r = float(torch.corrcoef(torch.stack([pred, y.float()]))[0, 1])
    if channels is not None:
        w = torch.cat([w, torch.zeros(x.shape[1] - channels)])
    if scale == "norm":
        return w, None, r
    unit = w / w.norm()
    order = y.argsort()
    half = len(order) // 2
    gap = abs(float((x[order[half:]].mean(0) - x[order[:half]].mean(0)) @ unit))
    return unit * gap, gap, r


@dataclass
class ConceptRecipe:
    """How one concept is built, in any modality (see :func:`build_concept`).

    Either contrastive examples (``positive`` / ``negative``: texts, avatar conditions, images,
    sentences: whatever ``renderer`` renders) with ``method`` ``mean-diff`` or ``pca``, or
    ``examples`` with a measured ``attribute`` and ``method="probe"``. ``renderer`` and ``rows``
    name a registered renderer and row selector (built with their ``*_options``); ``attribute`` a
    registered measured attribute or one the row selector already supplies.
    """

    name: str
    site: str
    renderer: str
    rows: str = "all"
    method: str = "mean-diff"
    positive: Sequence[Any] | None = None
    negative: Sequence[Any] | None = None
    examples: Sequence[Any] | None = None
    attribute: str | None = None
    renderer_options: dict[str, Any] = field(default_factory=dict)
    rows_options: dict[str, Any] = field(default_factory=dict)
    attribute_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    scale: str = "norm"
    """How a feature's scale is taken: ``norm`` or ``projection`` (see :func:`contrast_vector`)."""
    norm_from: str = "all"
    """Which examples the site norm is the median norm of: ``all``, ``positive`` or ``negative``."""
    ridge: float = 1e-2
    channels: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first inconsistency."""
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: choose one of {METHODS}")
        if self.scale not in SCALES or self.norm_from not in NORM_FROM:
            raise ValueError(f"scale must be one of {SCALES} and norm_from one of {NORM_FROM}")
        if self.method == "probe":
            if self.examples is None or self.attribute is None:
                raise ValueError(f"concept {self.name!r}: a probe needs examples and an attribute")
        elif self.positive is None or self.negative is None:
            raise ValueError(f"concept {self.name!r}: {self.method} needs positive and negative examples")
        elif self.method == "pca" and len(self.positive) != len(self.negative):
            raise ValueError(f"concept {self.name!r}: pca needs as many positive as negative "
                             "examples (pairs)")


def batched(items: Sequence[Any], batch_size: int) -> list[Sequence[Any]]:
    """``items`` cut into consecutive batches of ``batch_size`` (the last may be shorter)."""
    return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]


def contrast_concept(name: str, site: str, positive: Harvested, negative: Harvested, *,
                     model: ModelFingerprint | None, method: str = "mean-diff",
                     scale: str = "norm", norm_from: str = "all",
                     details: dict | None = None) -> DirectionSet:
    """A one-feature :class:`DirectionSet` from harvested positive and negative examples."""
    same = positive.rows[site].shape == negative.rows[site].shape and torch.equal(
        positive.rows[site], negative.rows[site])
    vector, value = contrast_vector(method, positive, negative, site, scale)
    if same or not torch.isfinite(vector).all() or vector.norm() == 0:
        raise ValueError(f"concept {name!r}: the positive and negative examples give identical "
                         "activations; contrast two different sets")
    norms = {"positive": [positive], "negative": [negative], "all": [positive, negative]}[norm_from]
    site_norm = _median([h.norms[site] for h in norms])
    return direction_set([vector], [name], site=site, site_norm=site_norm, model=model,
                         method=method, scales=None if value is None else [value],
                         details=details)


def probe_concept(name: str, site: str, examples: Harvested, values: str, *,
                  model: ModelFingerprint | None, ridge: float = 1e-2, scale: str = "norm",
                  channels: int | None = None, method: str = "probe",
                  details: dict | None = None) -> DirectionSet:
    """A one-feature :class:`DirectionSet`: a ridge probe to the measured ``values`` (its
    training correlation and the values' mean and spread are recorded in ``details`` as
    ``train_r``, ``attribute_mean`` and ``attribute_std``)."""
    vector, value, r = probe_vector(examples, site, values, ridge=ridge, scale=scale,
                                    channels=channels)
    y = examples.values[site][values]
    y = y[~y.isnan()]
    return direction_set([vector], [name], site=site, site_norm=examples.site_norm(site),
                         model=model, method=method, scales=None if value is None else [value],
                         details={**(details or {}), "train_r": round(r, 3),
                                  "attribute_mean": float(y.mean()), "attribute_std": float(y.std())})


def _median(norms: Sequence[torch.Tensor]) -> float:
    value = torch.cat([n.reshape(-1) for n in norms]).float().median().item()
    if not math.isfinite(value) or value <= 0:
        raise ValueError("activations have no finite non-zero norm; check the inputs")
    return value


def build_concept(adapter: Any, recipe: ConceptRecipe, *, plugins: Any = None,
                  progress: bool = False) -> DirectionSet:
    """Render the recipe's examples through ``adapter`` capturing its site, then build the concept.

    Contrasts harvest the positive and the negative examples separately (each in batches of
    ``batch_size``, so a batch never mixes the two); probes harvest the examples with the measured
    attribute as a per-row value. The result records the model's fingerprint, the site, its norm
    and the method.
    """
    from polysteer.workflows.harvesting import attribute, collect, renderer, row_selector

    recipe.check()
    select = row_selector(recipe.rows, plugins, **recipe.rows_options)
    measured = {}
    if recipe.attribute is not None and recipe.method == "probe":
        if recipe.attribute in (plugins or current_plugin_manager()).attributes:
            measured[recipe.attribute] = attribute(recipe.attribute, plugins, **recipe.attribute_options)

    def read(inputs: Sequence[Any], desc: str) -> Harvested:
        # a fresh renderer per set: positive and negative examples get the same seeds
        render = renderer(recipe.renderer, plugins, **recipe.renderer_options)
        return collect(adapter, batched(list(inputs), recipe.batch_size), [recipe.site],
                       renderer=render, rows=select, attributes=measured, progress=progress,
                       total_items=len(inputs), desc=desc)

    model = adapter.model_fingerprint
    if recipe.method == "probe":
        examples = read(recipe.examples or [], f"{recipe.name}: examples")
        if recipe.attribute not in examples.values[recipe.site]:
            raise ValueError(f"concept {recipe.name!r}: attribute {recipe.attribute!r} is neither "
                             f"registered nor given by row selector {recipe.rows!r}")
        return probe_concept(recipe.name, recipe.site, examples, recipe.attribute, model=model,
                             ridge=recipe.ridge, scale=recipe.scale, channels=recipe.channels,
                             details=recipe.details)
    positive = read(recipe.positive or [], f"{recipe.name}: positive")
    negative = read(recipe.negative or [], f"{recipe.name}: negative")
    return contrast_concept(recipe.name, recipe.site, positive, negative, model=model,
                            method=recipe.method, scale=recipe.scale, norm_from=recipe.norm_from,
                            details=recipe.details)

