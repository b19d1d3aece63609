"""Overhead of steering the shipped avatar diffusion model: steered / plain denoising in one process.

25 DDIM steps at 32 x 32, unconditional, batch 1 and 8, for one direction (``mid``), a 3-component
style (``down.2``, ``mid``, ``up.1``; a ramp schedule over progress and a region mask) and a reactive
rule reading a feature every step. Target: ratio <= 1.03.

    python benchmarks/image_overhead.py [--model avatars] [--steps 25] [--repeats 15] [--json]
"""

from __future__ import annotations

import argparse

import torch
from overhead import cases, report, run_cases

import polysteer as ps

SITES = ["mid", "down.2", "up.1"]


def image_cases(adapter, sites: list[str]) -> dict[str, ps.Style]:
    """The shared cases, the third component of the style in the top half of the image."""
    return cases(adapter, sites, positions={"kind": "region", "top": 0.0, "bottom": 0.5})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="avatars", help="shipped image model or pipeline folder")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(1)
    adapter = ps.load_model({"kind": "diffusers", "name": args.model})
    styles = image_cases(adapter, SITES)
    batches = {b: b for b in args.batch}

    def generate(batch):
        return adapter.generate(batch, num_inference_steps=args.steps)

    results = run_cases(adapter, styles, generate, batches, args.steps, args.repeats)
    report(f"{args.model}, {args.steps} denoising steps, 1 thread, median of {args.repeats} "
           "interleaved pairs", results, args.json)


if __name__ == "__main__":
    main()
