"""Overhead of the steering runtime on the pure-torch reference model (no download).

Steered / plain generation, run interleaved in one process, for one direction, a 3-component
style and a reactive rule. The reference model's forward pass is tiny, so this shows the runtime's
absolute per-step cost (microseconds) more than a realistic ratio: see text_overhead.py for that.

    python benchmarks/runtime_overhead.py [--d-model 256 --layers 6 --tokens 64] [--json]
"""

from __future__ import annotations

import argparse

import torch
from overhead import cases, report, run_cases

from polysteer.models import ReferenceAdapter, ReferenceConfig, ReferenceLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    config = ReferenceConfig(vocab_size=512, d_model=args.d_model, n_layers=args.layers, n_heads=8,
                             max_positions=args.tokens + 16)
    adapter = ReferenceAdapter(ReferenceLM(config))
    n = args.layers
    styles = cases(adapter, [f"blocks.{i}.resid_post" for i in (n // 3, n // 2, n - 1)])
    g = torch.Generator().manual_seed(1)
    batches = {b: torch.randint(1, 512, (b, 8), generator=g) for b in args.batch}
    results = run_cases(adapter, styles, lambda x: adapter.generate(x, max_new_tokens=args.tokens),
                        batches, args.tokens, args.repeats)
    report(f"reference model d_model={args.d_model} layers={n}, {args.tokens} new tokens, median of "
           f"{args.repeats} interleaved runs", results, args.json)


if __name__ == "__main__":
    main()
