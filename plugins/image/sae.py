"""A sparse autoencoder on the avatar model's UNet block activations, labelled by measured effect.

Cells of one site (default ``up.1``: 16 x 16 cells of 128 channels) are harvested at a few denoising
steps from unconditional and randomly conditioned samples, together with measures of each final
image: the attribute classifier's probability of every value (``avatar_<attribute>_<value>``) and
the image statistics (``brightness``, ``warmth``, ``saturation``, ``contrast``). A TopK SAE is trained
on the cells with the core trainer (:func:`polysteer.sae_training.train_sae`). Labels come in two
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
``sae.info.details["labels"]``. ``python -m polysteer.plugins.image.sae [--out configs/dictionary]``
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
from polysteer.sae_training import TrainConfig, train_sae
from polysteer.search import correlations

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
    ``seed + b``) capturing ``site`` at the denoising steps nearest to the progress points ``at``."""
    from tqdm import tqdm

    chosen = sorted({round(p * (steps - 1)) for p in at})
    conditions = random_conditions(images, seed)
    acts, values = [], []
    starts = range(0, images, batch)
    for b, start in enumerate(tqdm(starts, desc=f"harvesting {site}", disable=not progress, leave=False)):
        inputs = conditions[start:start + batch]
        with steer(adapter, None, capture=[site]) as run:
            out = adapter.generate(inputs, seed=seed + b, num_inference_steps=steps).outputs
        acts.append(run.captured(site)[chosen].transpose(0, 1).float())  # (B, S, P, C)
        values.append(measures(out))
    names = values[0].keys()
    return Harvest(site, torch.cat(acts), {m: torch.cat([v[m] for v in values]) for m in names},
                   chosen, conditions)


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
@dataclass
class Candidate:
    """A feature whose per-image activation correlates with a measure."""

    feature: int
    measure: str
    correlation: float
    positions: dict[str, Any]


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
    out = []
    for measure, values in h.measures.items():
        r = correlations(pooled, values)
        for feature in r.abs().argsort(descending=True)[:per_measure].tolist():
            if r[feature] != 0:
                out.append(Candidate(feature, measure, float(r[feature]), where_it_fires(where[:, feature])))
    return out


def floors(h: Harvest) -> dict[str, float]:
    """The smallest mean change that labels a feature, per measure."""
    return {m: PROBABILITY_FLOOR if m.startswith("avatar_") else STAT_FLOOR * float(v.std())
            for m, v in h.measures.items()}


def probe_style(sae: SparseAutoencoder, feature: int, positions: Mapping[str, Any]) -> Style:
    """A one-component style adding ``feature``'s decoder direction of the in-memory ``sae``."""
    component = {"dictionary": "in-memory", "feature": feature, "intervention": "add",
                 "positions": dict(positions)}
    style = Style.from_dict({"name": "sae-probe", "components": [component]})
    style.components[0].dictionary = sae
    return style


def measure_steered(adapter: Any, style: Style | None, intensity: float, *, count: int, seed: int,
                    steps: int = STEPS, measures: Measures = image_measures) -> dict[str, torch.Tensor]:
    """Measures of ``count`` unconditional samples from ``seed`` steered by ``style`` at ``intensity``."""
    with steer(adapter, style, intensity=intensity):
        return measures(adapter.generate(count, seed=seed, num_inference_steps=steps).outputs)


def _side_effects(changes: dict[str, torch.Tensor], measure: str, top: int = 3) -> dict[str, float]:
    """Mean changes of the ``top`` most moved classifier probabilities of *other* attributes than
    ``measure``'s, and of every image statistic."""
    attribute = measure.rsplit("_", 1)[0] + "_" if measure.startswith("avatar_") else measure
    means = {m: float(c.mean()) for m, c in changes.items() if m != measure and not m.startswith(attribute)}
    probs = sorted((m for m in means if m.startswith("avatar_")), key=lambda m: -abs(means[m]))[:top]
    return {m: round(means[m], 3) for m in [*probs, *(m for m in means if not m.startswith("avatar_"))]}


def verify(adapter: Any, sae: SparseAutoencoder, found: Sequence[Candidate], floor: Mapping[str, float], *,
           intensity: float = 2.0, count: int = 32, seed: int = 1000, steps: int = STEPS,
           measures: Measures = image_measures, progress: bool = True, tried: list[dict] | None = None
           ) -> dict[str, dict[str, Any]]:
    """Add every candidate on ``count`` held-out seeds and label those whose effect holds
    (see the module docstring); sets ``sae.labels`` and returns the evidence per label. Every
    candidate's outcome is appended to ``tried`` when given."""
    from tqdm import tqdm

    base = measure_steered(adapter, None, 0.0, count=count, seed=seed, steps=steps, measures=measures)
    labels, evidence, best = list(sae.labels), {}, {}
    done: dict[tuple, dict[str, torch.Tensor]] = {}
    for c in tqdm(found, desc="verifying candidates", disable=not progress, leave=False):
        key = (c.feature, repr(sorted(c.positions.items())))
        if key not in done:
            got = measure_steered(adapter, probe_style(sae, c.feature, c.positions), intensity, count=count,
                                  seed=seed, steps=steps, measures=measures)
            done[key] = {m: got[m] - base[m] for m in base}
        change = done[key][c.measure]
        mean, se = float(change.mean()), float(change.std()) / math.sqrt(len(change))
        sign = 1.0 if c.correlation > 0 else -1.0
        strength = mean * sign / max(floor[c.measure], SIGNIFICANCE * se, 1e-12)
        if tried is not None:
            tried.append({"feature": c.feature, "measure": c.measure, "correlation": round(c.correlation, 3),
                          "change": round(mean, 3), "standard_error": round(se, 4), "holds": strength > 1})
        if strength <= 1 or strength <= best.get(c.feature, (0.0, ""))[0]:
            continue
        label = f"{c.measure}{'+' if sign > 0 else '-'} ({c.feature})"
        evidence.pop(best.get(c.feature, (0.0, ""))[1], None)  # a stronger effect of the same feature wins
        best[c.feature] = (strength, label)
        labels[c.feature] = label
        evidence[label] = {"feature": c.feature, "measure": c.measure, "correlation": round(c.correlation, 3),
                           "intensity": intensity, "positions": c.positions, "change": round(mean, 3),
                           "standard_error": round(se, 4), "floor": round(floor[c.measure], 4),
                           "side_effects": _side_effects(done[key], c.measure),
                           "seeds": f"{count} unconditional images, seed {seed}, {steps} steps"}
    sae.labels = labels
    return evidence


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


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild the avatar model's block SAE into ``--out``."""
    import argparse
    import time

    import polysteer as ps
    from polysteer.paths import configs_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=configs_dir() / "dictionary")
    parser.add_argument("--model", default="avatars", help="shipped name or avatar pipeline folder")
    parser.add_argument("--figure", type=Path, help="also draw the labelled features into this PNG")
    for name, value in asdict(BuildConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    cfg = BuildConfig(**{k: getattr(args, k) for k in asdict(BuildConfig())})
    torch.set_num_threads(1)
    start = time.perf_counter()
    adapter = ps.load_model({"kind": "diffusers", "name": args.model})
    sae = build_sae(adapter, cfg)
    path = sae.save(args.out / f"avatars-{cfg.site}-sae")
    metrics = sae.info.details["metrics"]
    print(f"{sae.describe()} -> {path} in {time.perf_counter() - start:.0f} s")
    print({k: round(metrics[k], 3) for k in ("fve", "l0", "dead_fraction", "eval_dead_fraction")})
    tried = sae.info.details["candidates"]
    print(f"{len(sae.info.details['labels'])} features labelled; {sum(t['holds'] for t in tried)} of "
          f"{len(tried)} candidates held")
    for label, evidence in sae.info.details["labels"].items():
        print(f"  {label}: change {evidence['change']:+.3f} (r {evidence['correlation']:+.2f}, "
              f"{evidence['positions']}), side effects {evidence['side_effects']}")
    if args.figure:
        print(f"figure: {label_figure(adapter, sae, args.figure, steps=cfg.steps)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
