#!/usr/bin/env python
"""Rebuild the avatar model's labelled block SAE (the shipped ``avatars-up.1-sae``).

    OMP_NUM_THREADS=1 python scripts/build_image_sae.py --figure docs/figures/image-sae-labels.png
    python scripts/build_image_sae.py --out my-dicts --images 128 --count 16   # smaller, faster

Every ``BuildConfig`` field of :mod:`polysteer.plugins.image.sae` is an option (``--site``,
``--images``, ``--train-steps``...). Nothing here is needed at run time; it only makes the shipped
dictionary reproducible.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild the avatar model's block SAE into ``--out``; 0 on success."""
    import torch

    import polysteer as ps
    from polysteer.plugins.image import SHIPPED
    from polysteer.plugins.image.sae import BuildConfig, build_sae, label_figure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED / "dictionary",
                        help="folder the dictionary is written to (default: the shipped ones)")
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
    sys.exit(main())
