#!/usr/bin/env python
"""Rebuild the shipped concept dictionaries (and the per-layer ablation dictionaries) from the specs.

    python scripts/build_concepts.py                 # every configs/concepts/*.yaml, then the ablations
    python scripts/build_concepts.py formal pirate   # only these concepts (and their ablations, if any)
    python scripts/build_concepts.py --no-ablation   # skip the per-layer ablation dictionaries

Each spec ``configs/concepts/NAME.yaml`` becomes ``plugins/text/shipped/dictionary/MODEL-NAME``
exactly as ``polysteer concept build configs/concepts/NAME.yaml -o
plugins/text/shipped/dictionary/MODEL-NAME`` would build it (the same ``build_concept``; the model
is loaded once here).

Ablation ("abliteration"): for each concept in ``ABLATIONS`` the same difference of means is taken
at every layer's ``resid_post`` (one harvest pass captures all layers). Projecting a direction out
sets its read-out to zero, which erases the concept only where ordinary text sits near zero on it;
at layers where neutral text has a large offset along the direction, projecting it out *moves*
every token (it injects the concept, or breaks the model). So a layer is kept when the mean read-out
of neutral text is within ``MAX_NEUTRAL_LEVEL`` of zero (in units of the concept's scale, the
positive-minus-negative distance). Kept layers are saved as ``plugins/text/shipped/dictionary/MODEL-NAME-LNN``
and listed in the generated style ``configs/style/abliterate-NAME.yaml`` (one ``ablate`` component
per layer).

Nothing here is needed at run time; it only makes the shipped files reproducible.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = ROOT / "configs" / "concepts"
DICTIONARIES = ROOT / "plugins" / "text" / "shipped" / "dictionary"
STYLES = ROOT / "configs" / "style"

# Concepts that get per-layer ablation dictionaries and an abliterate-NAME style.
ABLATIONS = ("positive",)
MAX_NEUTRAL_LEVEL = 0.5

# Ordinary text with no particular sentiment, register or language, for the neutral level.
NEUTRAL_TEXTS = [
    "My weekend was quiet. On Saturday I went for a walk in the park, and on Sunday I cooked dinner.",
    "You could go for a walk, cook dinner, call a friend or watch a movie this evening.",
    "The city has a river, a few parks, an old town and a busy train station.",
    "Boil some water, put a tea bag in a cup and let it steep for three minutes.",
    "The meeting is on Tuesday at ten in the second floor room.",
    "The report lists the number of visitors per month for the last two years.",
    "To install the program, download the file and run the installer.",
    "The train to the airport leaves every twenty minutes from platform four.",
]


def build_ablation(adapter, spec, model: str, main) -> list[int]:
    """Per-layer dictionaries for ``spec``; returns the kept layers."""
    import torch

    from polysteer.workflows import batched, collect, contrast_concept, renderer, row_selector

    layers = sorted({int(s.split(".")[1]) for s in adapter.sites() if s.endswith(".resid_post")})
    sites = [f"blocks.{layer}.resid_post" for layer in layers]
    recipe = spec.recipe()  # the same renderer, selector and batches as build_concept

    def read(texts):
        return collect(adapter, batched(texts, recipe.batch_size), sites,
                       renderer=renderer(recipe.renderer), rows=row_selector(recipe.rows))

    pos, neg, neutral = read(recipe.positive), read(recipe.negative), read(NEUTRAL_TEXTS)
    for old in DICTIONARIES.glob(f"{model}-{spec.name}-L[0-9][0-9]"):
        shutil.rmtree(old)
    kept = []
    for layer, site in zip(layers, sites, strict=True):
        dictionary = contrast_concept(
            spec.name, site, pos, neg, model=adapter.model_fingerprint, method="mean-diff",
            details={"description": f"{spec.description} (layer {layer}, for ablation)",
                     "examples": len(recipe.positive) + len(recipe.negative)})
        unit, scale = dictionary.directions[0], float(dictionary.scales[0])

        def level(got, site=site, unit=unit, scale=scale):
            return float((got.rows[site] @ unit).mean()) / scale

        levels = {"positive": level(pos), "negative": level(neg), "neutral": level(neutral)}
        keep = abs(levels["neutral"]) < MAX_NEUTRAL_LEVEL
        print(f"  {site:<22} scale {scale:6.1f}  levels: positive {levels['positive']:+.2f} "
              f"negative {levels['negative']:+.2f} neutral {levels['neutral']:+.2f}"
              f"{'  kept' if keep else ''}")
        if site == spec.site:  # the same recipe as build_concept: the vectors must agree
            assert torch.allclose(main.unit[0], unit, atol=1e-5), "per-layer build disagrees"
        if not keep:
            continue
        dictionary.info.details["levels"] = levels
        dictionary.save(DICTIONARIES / f"{model}-{spec.name}-L{layer:02d}")
        kept.append(layer)
    return kept


def write_ablation_style(spec, model: str, layers: list[int]) -> Path:
    lines = [
        f"# Generated by scripts/build_concepts.py (do not edit): project the {spec.name!r} direction",
        "# out of the residual stream at every layer where neutral text sits near zero on it",
        f"# (|neutral level| < {MAX_NEUTRAL_LEVEL}), one direction per layer. Intensity 1.0 removes the",
        "# whole component, 0.5 half of it. Measurements in docs/text.md.",
        f"name: abliterate-{spec.name}",
        f"description: {spec.name} projected out at {len(layers)} layers (SmolLM2)",
        "components:",
    ]
    for layer in layers:
        lines += [f"  - name: L{layer:02d}", f"    dictionary: {model}-{spec.name}-L{layer:02d}",
                  f"    feature: {spec.name}", "    intervention: ablate", "    weight: 1.0"]
    path = STYLES / f"abliterate-{spec.name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="concepts to build (default: every spec)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--no-ablation", action="store_true", help="skip the per-layer dictionaries")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy box)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    import polysteer
    from polysteer.plugins.text.concepts import ConceptSpec, build_concept

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [CONCEPTS / f"{n}.yaml" for n in args.names] or sorted(CONCEPTS.glob("*.yaml"))
    adapter = polysteer.load_model(args.model)
    for path in paths:
        spec = ConceptSpec.load(path)
        dictionary = build_concept(adapter, spec)
        out = dictionary.save(DICTIONARIES / f"{args.model}-{spec.name}")
        print(f"{spec.name}: {dictionary.describe()} -> {out.relative_to(ROOT)} "
              f"(site norm {dictionary.info.site_norm:.0f}, scale {float(dictionary.scales[0]):.1f}, "
              f"recommended intensity {spec.intensity})")
        if spec.name in ABLATIONS and not args.no_ablation:
            layers = build_ablation(adapter, spec, args.model, dictionary)
            print(f"  ablation layers {layers} -> {write_ablation_style(spec, args.model, layers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
