#!/usr/bin/env python
"""Rebuild the shipped avatar classifier and image concept dictionaries.

    python scripts/build_image_concepts.py                  # concepts (and the classifier if missing)
    python scripts/build_image_concepts.py --classifier     # retrain the classifier too
    python scripts/build_image_concepts.py avatars-smile    # only these concepts

Classifier (``plugins/image/shipped/model/avatars-classifier``): trained on avatars ``0 .. --train-
images - 1`` of the seed-0 render set (the diffusion model's training set; ``--data`` reuses its
cached render), evaluated on the held-out avatars ``28000 .. 29999`` (seed 0) and on 2000 fresh ones
(seed 1); accuracies go to ``metrics.json`` beside the weights.

Concepts: every ``configs/image-concepts/avatars-*.yaml`` (:class:`ImageConceptSpec`) becomes
``plugins/image/shipped/dictionary/<name>`` built on the shipped ``avatars`` model by
:func:`~polysteer.plugins.image.concepts.build_image_concept`. Nothing here is needed at run time.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = ROOT / "configs" / "image-concepts"
DICTIONARIES = ROOT / "plugins" / "image" / "shipped" / "dictionary"
CLASSIFIER = ROOT / "plugins" / "image" / "shipped" / "model" / "avatars-classifier"


def _data(count: int, seed: int, start: int, cache: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rendered avatars, sliced from a cached render of the same seed when one is given."""
    from polysteer.io import read_tensors
    from polysteer.plugins.image.avatars import build_dataset

    if cache is not None and cache.exists() and f"seed{seed}" in cache.name:
        data = read_tensors(cache)
        if len(data["images"]) >= start + count:
            return data["images"][start:start + count], data["labels"][start:start + count]
    return build_dataset(count, seed=seed, start=start)


def build_classifier(args: argparse.Namespace) -> None:
    from polysteer.io import write_json
    from polysteer.plugins.image.avatars import ATTRIBUTES
    from polysteer.plugins.image.classifier import accuracy, train_classifier

    images, labels = _data(args.train_images, 0, 0, args.data)
    model = train_classifier(images, labels, ATTRIBUTES, steps=args.classifier_steps)
    held_out = accuracy(model, *_data(2000, 0, 28000, args.data))
    fresh = accuracy(model, *_data(2000, 1, 0, None))
    model.save(CLASSIFIER)
    write_json(CLASSIFIER / "metrics.json", {
        "train_images": args.train_images, "steps": args.classifier_steps,
        "accuracy_held_out_seed0": held_out, "accuracy_fresh_seed1": fresh,
        "parameters": sum(p.numel() for p in model.parameters())})
    print(f"classifier: held-out accuracy {held_out}", file=sys.stderr)


def build_concepts(names: list[str]) -> None:
    import polysteer as ps
    from polysteer.plugins.image.concepts import ImageConceptSpec, build_image_concept

    adapter = ps.load_model({"kind": "diffusers", "name": "avatars"})
    specs = sorted(CONCEPTS.glob("avatars-*.yaml"))
    for path in specs:
        spec = ImageConceptSpec.load(path)
        if names and spec.name not in names:
            continue
        concept = build_image_concept(adapter, spec)
        concept.save(DICTIONARIES / spec.name)
        print(f"{spec.name}: site {spec.site}, scale {float(concept.scales[0]):.3f}", file=sys.stderr)


FIGURES = ROOT / "docs" / "figures"
SAMPLE_ROWS = [{}, {"glasses": "sunglasses"}, {"glasses": "glasses"}, {"mouth": "smile"}, {"mouth": "sad"},
               {"background": "orange"}, {"background": "green"}, {"hair_colour": "red", "skin": "dark"}]


def _save(images: torch.Tensor, columns: int, path: Path, scale: int = 4) -> None:
    from polysteer.plugins.image.adapter import image_grid, save_png, to_pil

    save_png(to_pil(image_grid(images, columns), scale=scale)[0], path)


def build_figures(log: Path, steps: int = 25) -> None:
    """Training curve, conditional samples, and the unconditional model steered by each style."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import polysteer as ps

    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1)
    ax.set(xlabel="step (batch 32)", ylabel="v-prediction MSE", yscale="log",
           title="avatars: training loss (mean per 25 steps)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(FIGURES / "image-training-curve.png", dpi=120)
    adapter = ps.load_model({"kind": "diffusers", "name": "avatars"})
    rows = [adapter.generate([row] * 8 if row else 8, seed=0, num_inference_steps=steps).outputs
            for row in SAMPLE_ROWS]
    _save(torch.cat(rows), 8, FIGURES / "image-samples.png")
    for style in ("avatars-sunglasses", "avatars-smiling"):
        loaded = ps.load_style(style)
        columns = []
        for intensity in (0.0, 0.5, 1.0, 1.5, 2.0):
            with ps.steer(adapter, loaded, intensity=intensity):
                columns.append(adapter.generate(6, seed=0, num_inference_steps=steps).outputs)
        grid = torch.stack(columns, 1).flatten(0, 1)  # rows = seeds, columns = intensities
        _save(grid, 5, FIGURES / f"image-steer-{style.removeprefix('avatars-')}.png")


MEASURED = {"avatars-sunglasses": ("glasses", "sunglasses"), "avatars-smiling": ("mouth", "smile")}


def measure_styles(intensities: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0), seeds: int = 32,
                   steps: int = 20) -> str:
    """Markdown table: per shipped style and intensity, the classifier's score of its attribute, the
    total-variation change of every other attribute's predicted distribution, warmth and distance."""
    import polysteer as ps
    from polysteer.plugins.image.classifier import shipped_classifier
    from polysteer.plugins.image.measures import distance_to_baseline, warmth

    adapter = ps.load_model({"kind": "diffusers", "name": "avatars"})
    clf = shipped_classifier()
    lines = ["| style | intensity | score | largest other change (TV) | warmth | distance to unsteered |",
             "|---|---|---|---|---|---|"]
    plain = adapter.generate(seeds, seed=1000, num_inference_steps=steps).outputs
    base = {k: v.mean(0) for k, v in clf.probabilities(plain).items()}
    for style, (attribute, value) in MEASURED.items():
        loaded = ps.load_style(style)
        for intensity in intensities:
            with ps.steer(adapter, loaded, intensity=intensity):
                images = adapter.generate(seeds, seed=1000, num_inference_steps=steps).outputs
            probs = {k: v.mean(0) for k, v in clf.probabilities(images).items()}
            score = float(probs[attribute][clf.attributes[attribute].index(value)])
            moved = {k: 0.5 * float((probs[k] - base[k]).abs().sum()) for k in probs if k != attribute}
            worst = max(moved, key=moved.get)
            lines.append(f"| {style} | {intensity:g} | {attribute}={value}: {score:.2f} | "
                         f"{worst} {moved[worst]:.2f} | {float(warmth(images).mean()):+.3f} | "
                         f"{float(distance_to_baseline(images, plain).mean()):.3f} |")
    return "\n".join(lines)


def measure_conditions(guidances: tuple[float, ...] = (1.0, 3.0), seeds: int = 32, steps: int = 20) -> str:
    """Markdown table: for every attribute value, the classifier's mean score of that value on
    unconditional samples and on samples asked for it at each guidance scale (same seeds)."""
    import polysteer as ps
    from polysteer.plugins.image.avatars import ATTRIBUTES
    from polysteer.plugins.image.classifier import shipped_classifier

    adapter = ps.load_model({"kind": "diffusers", "name": "avatars"})
    clf = shipped_classifier()
    plain = adapter.generate(seeds, seed=1000, num_inference_steps=steps).outputs
    head = " | ".join(f"asked, guidance {g:g}" for g in guidances)
    lines = [f"| attribute = value | unconditional | {head} |", "|---" * (2 + len(guidances)) + "|"]
    for attribute, values in ATTRIBUTES.items():
        for value in values:
            asked = [adapter.generate({attribute: value}, batch_size=seeds, seed=1000,
                                      num_inference_steps=steps, guidance_scale=g).outputs for g in guidances]
            scores = [float(clf.score(x, attribute, value).mean()) for x in (plain, *asked)]
            lines.append(f"| {attribute} = {value} | " + " | ".join(f"{v:.2f}" for v in scores) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="concept names (default: all avatars-* specs)")
    p.add_argument("--classifier", action="store_true", help="retrain the attribute classifier")
    p.add_argument("--no-concepts", action="store_true", help="only the classifier")
    p.add_argument("--data", type=Path, default=None,
                   help="cached render of the training script "
                        "(OUT/data/avatars-32px-30000-seed0.safetensors)")
    p.add_argument("--figures", type=Path, default=None, metavar="LOG",
                   help="also draw docs/figures/image-*.png (LOG: the training run's log.jsonl)")
    p.add_argument("--measure", action="store_true", help="print the shipped styles' measured effect")
    p.add_argument("--conditions", action="store_true",
                   help="print how well the model follows each attribute condition")
    p.add_argument("--train-images", type=int, default=12000)
    p.add_argument("--classifier-steps", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.classifier or not (CLASSIFIER / "model.safetensors").exists():
        build_classifier(args)
    if not args.no_concepts:
        build_concepts(args.names)
    if args.figures is not None:
        build_figures(args.figures)
    if args.measure:
        print(measure_styles())
    if args.conditions:
        print(measure_conditions())
    return 0


if __name__ == "__main__":
    sys.exit(main())
