"""A sparse autoencoder on the avatar model's UNet block activations, labelled by measured effect.

Cells of one site (default ``up.1``: 16 x 16 cells of 128 channels) are harvested at a few denoising
steps from unconditional and randomly conditioned samples, together with measures of each final
image: the attribute classifier's probability of every value (``avatar_<attribute>_<value>``) and
the image statistics (``brightness``, ``warmth``, ``saturation``, ``contrast``). A TopK SAE is trained
on the cells with the core trainer (:func:`polysteer.workflows.train_sae`). Labels come in two
stages, as for the voice SAE:

1. *candidates*: for each measure, the features whose per-image activation (mean over the cells
   and harvested steps, :func:`feature_means`) correlates most with it;
2. *verified by effect*: each candidate's decoder direction is added (``add``, a fixed intensity,
   at every step) on held-out unconditional seeds, in the rectangle of cells where the feature
   fires (its footprint, :func:`where_it_fires`; the whole picture when it fires everywhere). Most
   features are local (an eye, the mouth), and added over the whole picture they do little or the
   wrong thing (measured: a smile feature raised the smile probability by 0.26 in its box, by 0.04
   over the whole picture). Every measure is taken again on the same seeds. A candidate is
   labelled ``<measure>+ (N)`` (adding it raises the measure) or ``<measure>- (N)`` (adding it
   lowers it) only when the mean change has the sign of its correlation and exceeds both a floor
   (:data:`PROBABILITY_FLOOR` for classifier probabilities, :data:`STAT_FLOOR` of the measure's
   spread over the harvested images for the statistics) and three standard errors of the
   per-image changes.

The evidence of every labelled feature (correlation, where and how hard it was added, the change of
its measure and the largest changes of the other measures: side effects) is kept in
``sae.info.details["labels"]``. ``python scripts/build_image_sae.py [--out plugins/image/shipped/dictionary]``
rebuilds the shipped ``avatars-up.1-sae``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from polysteer import SparseAutoencoder, Style, steer
from polysteer.workflows import (
    Candidate,
    EffectMeasure,
    TrainConfig,
    correlated_candidates,
    label_by_effect,
    train_sae,
)
from polysteer.workflows import probe_style as core_probe_style

SITE = "up.1"
STEPS = 20
"""Denoising steps of every sample (harvest and verification)."""
HARVEST_AT = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Progress points of the denoising steps whose cells are harvested."""
STATS = ("brightness", "warmth", "saturation", "contrast")
PROBABILITY_FLOOR = 0.1
"""Smallest mean change of a classifier probability that labels a feature (a tenth of the scale:
about what the avatar model's own condition moves an attribute at guidance 1)."""
STAT_FLOOR = 0.5
"""Smallest mean change of an image statistic, in standard deviations of it over harvested images."""
SIGNIFICANCE = 3.0
"""The mean change must also exceed this many standard errors of the per-image changes."""

Measures = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def image_measures(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(B,)`` per measure: the shipped classifier's probability of every attribute value
    (``avatar_<attribute>_<value>``) and the image statistics (``brightness``...)."""
    from polysteer.plugins.image.classifier import shipped_classifier
    from polysteer.plugins.image.concepts import per_image_measure

    classifier = shipped_classifier()
    probs = classifier.probabilities(images)
    out = {f"avatar_{a}_{v}": probs[a][:, i] for a, values in classifier.attributes.items()
           for i, v in enumerate(values)}
    return {**out, **{name: per_image_measure(name)(images) for name in STATS}}


@dataclass
class Harvest:
    """Activations of one site per image and the measures of the final images."""

    site: str
    acts: torch.Tensor  # (images, harvested steps, cells, channels)
    measures: dict[str, torch.Tensor]  # name -> (images,)
    steps: list[int]  # the harvested denoising steps
    conditions: list[dict[str, str]]

    @property
    def cells(self) -> torch.Tensor:
        """Every harvested cell vector, ``(N, C)``: the SAE's training rows."""
        return self.acts.reshape(-1, self.acts.shape[-1])


def random_conditions(count: int, seed: int = 0) -> list[dict[str, str]]:
    """``count`` conditions: the even ones unconditional (``{}``), the odd ones a random value of
    every attribute (drawn like the training data)."""
    from polysteer.plugins.image.avatars import sample_labels

    rng = random.Random(f"sae-conditions:{seed}")
    return [{} if i % 2 == 0 else sample_labels(rng) for i in range(count)]


def harvest(adapter: Any, site: str = SITE, *, images: int = 256, batch: int = 32, seed: int = 0,
            steps: int = STEPS, at: Sequence[float] = HARVEST_AT, measures: Measures = image_measures,
            progress: bool = True) -> Harvest:
    """Sample ``images`` avatars (half unconditional, half randomly conditioned; batch ``b`` uses seed
    ``seed + b``) capturing ``site`` at the denoising steps nearest to the progress points ``at``.

    The core harvest (:func:`polysteer.workflows.collect`) with renderer ``image`` and selector
    ``image-cells``; ``measures`` are taken on each batch's final images."""
    from polysteer.plugins.image.harvest import ImageRenderer, image_cells
    from polysteer.workflows import batched, collect

    conditions = random_conditions(images, seed)
    got = collect(adapter, batched(conditions, batch), [site],
                  renderer=ImageRenderer(seed=seed, steps=steps, seed_step=1), rows=image_cells(at),
                  progress=progress, total_items=images, desc=f"harvesting {site}")
    chosen = sorted({round(p * (steps - 1)) for p in at})
    acts = got.rows[site].reshape(images, len(chosen), -1, got.rows[site].shape[-1])
    values = [measures(out) for out in got.outputs]
    return Harvest(site, acts, {m: torch.cat([v[m] for v in values]) for m in values[0]}, chosen,
                   conditions)


def train(h: Harvest, adapter: Any, *, d_features: int = 512, k: int = 16, steps: int = 3000,
          progress: bool = True) -> SparseAutoencoder:
    """A TopK SAE on the harvested cells (core trainer); metrics in ``info.details["metrics"]``."""
    cells = h.cells
    config = TrainConfig(d_features=d_features, k=k, batch_size=512, steps=steps, lr=2e-3,
                         dead_after=50_000, log_every=100, eval_tokens=min(len(cells), 100_000))
    details = {"images": len(h.acts), "steps": h.steps, "cells": len(cells),
               "harvest": "half unconditional, half random conditions; guidance 1"}
    sae, _ = train_sae(cells, config, site=h.site, model=adapter.model_fingerprint, progress=progress,
                       details=details)
    return sae


# -- labelling ------------------------------------------------------------------------------------
def feature_means(sae: SparseAutoencoder, h: Harvest) -> tuple[torch.Tensor, torch.Tensor]:
    """One encoding pass over the harvest: every feature's mean activation per image (over its cells
    and harvested steps), ``(images, d_features)``, and per cell (over images and steps, the
    footprint), ``(cells, d_features)``."""
    per_image, total = [], torch.zeros(h.acts.shape[2], sae.d_features)
    with torch.no_grad():
        for acts in h.acts:  # (S, P, C) of one image
            cells = sae.encode(acts).mean(0)  # (P, F)
            per_image.append(cells.mean(0))
            total += cells
    return torch.stack(per_image), total / len(h.acts)


def where_it_fires(cells: torch.Tensor, share: float = 0.5, margin: int = 1, whole: float = 0.5
                   ) -> dict[str, Any]:
    """A ``region`` position mask: the box around the cells where a feature's mean activation
    ``(P,)`` is at least ``share`` of its peak, grown by ``margin`` cells on every side (what a
    cell draws spreads to its neighbours in the next blocks); ``{"kind": "all"}`` when the box
    covers ``whole`` of the grid or more, or the feature never fires."""
    side = math.isqrt(len(cells))
    if side * side != len(cells) or cells.max() <= 0:
        return {"kind": "all"}
    hot = (cells >= share * cells.max()).reshape(side, side)
    rows, cols = hot.any(1).nonzero().flatten(), hot.any(0).nonzero().flatten()
    r0, c0 = max(int(rows[0]) - margin, 0), max(int(cols[0]) - margin, 0)
    r1, c1 = min(int(rows[-1]) + 1 + margin, side), min(int(cols[-1]) + 1 + margin, side)
    if (r1 - r0) * (c1 - c0) >= whole * side * side:
        return {"kind": "all"}
    return {"kind": "region", "top": r0 / side, "bottom": r1 / side, "left": c0 / side, "right": c1 / side}


def candidates(sae: SparseAutoencoder, h: Harvest, per_measure: int = 2) -> list[Candidate]:
    """For each measure the ``per_measure`` features whose per-image mean activation correlates most
    (by magnitude) with it, with the position mask where each fires."""
    pooled, where = feature_means(sae, h)
    return correlated_candidates(pooled, h.measures, per_measure,
                                 positions=lambda feature: where_it_fires(where[:, feature]))


def floors(h: Harvest) -> dict[str, float]:
    """The smallest mean change that labels a feature, per measure."""
    return {m: PROBABILITY_FLOOR if m.startswith("avatar_") else STAT_FLOOR * float(v.std())
            for m, v in h.measures.items()}


def probe_style(sae: SparseAutoencoder, feature: int, positions: Mapping[str, Any]) -> Style:
    """A one-component style adding ``feature``'s decoder direction of the in-memory ``sae``."""
    return core_probe_style(sae, feature, positions, name="sae-probe")


def measure_steered(adapter: Any, style: Style | None, intensity: float, *, count: int, seed: int,
                    steps: int = STEPS, measures: Measures = image_measures) -> dict[str, torch.Tensor]:
    """Measures of ``count`` unconditional samples from ``seed`` steered by ``style`` at ``intensity``."""
    with steer(adapter, style, intensity=intensity):
        return measures(adapter.generate(count, seed=seed, num_inference_steps=steps).outputs)


def _side_effects(changes: Mapping[str, torch.Tensor], measure: str, top: int = 3) -> dict[str, float]:
    """Mean changes of the ``top`` most moved classifier probabilities of *other* attributes than
    ``measure``'s, and of every image statistic."""
    attribute = measure.rsplit("_", 1)[0] + "_" if measure.startswith("avatar_") else measure
    means = {m: float(c.mean()) for m, c in changes.items() if m != measure and not m.startswith(attribute)}
    probs = sorted((m for m in means if m.startswith("avatar_")), key=lambda m: -abs(means[m]))[:top]
    return {m: round(means[m], 3) for m in [*probs, *(m for m in means if not m.startswith("avatar_"))]}


def image_effect(measures: Measures = image_measures) -> EffectMeasure:
    """The image plugin's effect measure: ``measures`` (default the avatar classifier's
    probabilities and the image statistics) of ``inputs`` samples (a count or a list of
    conditions) generated from ``options["seed"]`` with ``options["steps"]`` denoising steps."""
    def measure(adapter: Any, inputs: Any, style: Style | None, intensity: float,
                options: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        with steer(adapter, style, intensity=intensity):
            out = adapter.generate(inputs, seed=options.get("seed", 0),
                                   num_inference_steps=options.get("steps", STEPS)).outputs
        return measures(out)

    return EffectMeasure(measure, "image", "avatar attribute probabilities and image statistics "
                         "(brightness, warmth, saturation, contrast) per image", _side_effects)


def verify(adapter: Any, sae: SparseAutoencoder, found: Sequence[Candidate], floor: Mapping[str, float], *,
           intensity: float = 2.0, count: int = 32, seed: int = 1000, steps: int = STEPS,
           measures: Measures = image_measures, progress: bool = True, tried: list[dict] | None = None
           ) -> dict[str, dict[str, Any]]:
    """Add every candidate on ``count`` held-out seeds and label those whose effect holds
    (see the module docstring; core's :func:`~polysteer.workflows.label_by_effect`); sets
    ``sae.labels`` and returns the evidence per label. Every candidate's outcome is appended to
    ``tried`` when given."""
    result = label_by_effect(adapter, sae, found, count, image_effect(measures), intensity=intensity,
                             floors=floor, significance=SIGNIFICANCE, prefer="strongest",
                             options={"seed": seed, "steps": steps}, progress=progress,
                             extra={"seeds": f"{count} unconditional images, seed {seed}, {steps} steps"})
    if tried is not None:
        tried.extend(result.tried())
    return result.evidence


@dataclass
class BuildConfig:
    """Everything :func:`build_sae` does, with the shipped defaults."""

    site: str = SITE
    images: int = 256  # harvested: half unconditional, half random conditions
    steps: int = STEPS  # denoising steps per sample
    d_features: int = 512
    k: int = 16
    train_steps: int = 3000
    per_measure: int = 2  # candidates per measure
    intensity: float = 2.0  # of every verifying add, in median cell norms of the site
    count: int = 32  # held-out unconditional images per verification
    seed: int = 1000  # of the held-out images


def build_sae(adapter: Any, config: BuildConfig | None = None, progress: bool = True) -> SparseAutoencoder:
    """Harvest, train and label the SAE of ``adapter``'s avatar model (see the module docstring)."""
    cfg = config or BuildConfig()
    h = harvest(adapter, cfg.site, images=cfg.images, steps=cfg.steps, progress=progress)
    sae = train(h, adapter, d_features=cfg.d_features, k=cfg.k, steps=cfg.train_steps, progress=progress)
    tried: list[dict[str, Any]] = []
    evidence = verify(adapter, sae, candidates(sae, h, cfg.per_measure), floors(h), intensity=cfg.intensity,
                      count=cfg.count, seed=cfg.seed, steps=cfg.steps, progress=progress, tried=tried)
    sae.info.details["labels"] = evidence
    sae.info.details["candidates"] = tried
    sae.info.details["labelling"] = {**asdict(cfg), "probability_floor": PROBABILITY_FLOOR,
                                     "stat_floor_std": STAT_FLOOR, "significance_se": SIGNIFICANCE}
    return sae


def label_figure(adapter: Any, sae: SparseAutoencoder, path: str | Path, *, count: int = 8, seed: int = 9000,
                 steps: int = STEPS) -> Path:
    """A PNG grid: ``count`` unconditional images from ``seed`` unsteered (first row), then one row per
    label (in sorted order) with the feature added as its evidence says."""
    from polysteer.plugins.image.adapter import image_grid, save_png, to_pil

    rows = [adapter.generate(count, seed=seed, num_inference_steps=steps).outputs]
    for _, evidence in sorted(sae.info.details["labels"].items()):
        with steer(adapter, probe_style(sae, evidence["feature"], evidence["positions"]),
                   intensity=evidence["intensity"]):
            rows.append(adapter.generate(count, seed=seed, num_inference_steps=steps).outputs)
    save_png(to_pil(image_grid(torch.cat(rows), count), scale=4)[0], Path(path))
    return Path(path)
