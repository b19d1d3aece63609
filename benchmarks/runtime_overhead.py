"""Overhead of the steering runtime: steered / plain generation on the reference model.

Runs the plain model and the steered model alternately in one process (so machine noise hits both)
and reports the median time ratio for: one direction, a 3-component style (schedule + mask +
per-sample intensity), and a reactive rule reading a feature every step. Also reports the
runtime's absolute cost per forward pass, which is what matters on a real model whose forward
pass is far slower than this one.

    python benchmarks/runtime_overhead.py [--d-model 256 --layers 6 --tokens 64 --batch 1 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import polysteer as ps
from polysteer.reference import ReferenceAdapter, ReferenceConfig, ReferenceLM

SITE = "blocks.{}.resid_post"


def make_styles(adapter: ReferenceAdapter, layers: int) -> dict[str, ps.Style]:
    sites = [SITE.format(i) for i in (layers // 3, layers // 2, layers - 1)]
    g = torch.Generator().manual_seed(0)
    dicts = [ps.direction_set([torch.randn(adapter.bind(s).channels, generator=g)], ["f"], site=s,
                              site_norm=1.0, model=adapter.model_fingerprint, method="random")
             for s in sites]

    def style(data: dict, dictionaries: list) -> ps.Style:
        st = ps.Style.from_dict(data)
        for comp, d in zip(st.components, dictionaries, strict=True):
            comp.dictionary = d
        for rule in st.rules:
            rule.dictionary = dictionaries[0]
        return st

    one = style({"components": [{"dictionary": "d", "feature": "f", "weight": 0.3}]}, dicts[:1])
    three = style({"components": [
        {"name": "a", "dictionary": "d", "feature": "f", "weight": 0.3},
        {"name": "b", "dictionary": "d", "feature": "f", "weight": 0.2,
         "schedule": {"kind": "ramp", "end": 0.5}},
        {"name": "c", "dictionary": "d", "feature": "f", "weight": 0.1, "positions": "generated"},
    ]}, dicts)
    rule = style({"components": [{"name": "a", "dictionary": "d", "feature": "f", "weight": 0.3,
                                  "enabled": False}],
                  "rules": [{"when": {"dictionary": "d", "feature": "f", "above": 0.5},
                             "then": {"apply": "a", "steps": 4}}]}, dicts[:1])
    return {"one direction": one, "3-component style": three, "reactive rule": rule}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(adapter, style, prompts, tokens: int, repeats: int) -> tuple[float, float, float]:
    """Median plain time, median steered time, and their ratio (runs interleaved)."""
    def plain():
        adapter.generate(prompts, max_new_tokens=tokens)

    def steered():
        with ps.steer(adapter, style, intensity=1.0):
            adapter.generate(prompts, max_new_tokens=tokens)

    plain(), steered()  # warm up
    ratios, plains, steers = [], [], []
    for _ in range(repeats):
        p, s = timed(plain), timed(steered)
        plains.append(p), steers.append(s), ratios.append(s / p)
    return statistics.median(plains), statistics.median(steers), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    config = ReferenceConfig(vocab_size=512, d_model=args.d_model, n_layers=args.layers,
                             n_heads=8, max_positions=args.tokens + 16)
    adapter = ReferenceAdapter(ReferenceLM(config))
    styles = make_styles(adapter, args.layers)
    results = {}
    for batch in args.batch:
        prompts = torch.randint(1, 512, (batch, 8), generator=torch.Generator().manual_seed(1))
        for name, style in styles.items():
            plain, steered, ratio = measure(adapter, style, prompts, args.tokens, args.repeats)
            key = f"{name.replace(' ', '_').replace('-', '_')}_batch{batch}"
            results[f"{key}_ratio"] = round(ratio, 4)
            results[f"{key}_overhead_us_per_step"] = round((steered - plain) / args.tokens * 1e6, 1)
            results[f"{key}_plain_ms_per_step"] = round(plain / args.tokens * 1e3, 3)
    if args.json:
        print(json.dumps(results))
        return
    print(f"reference model d_model={args.d_model} layers={args.layers}, {args.tokens} new tokens, "
          f"median of {args.repeats} interleaved runs")
    print(f"{'case':<34}{'plain ms/step':>14}{'overhead us/step':>18}{'steered/plain':>15}")
    for batch in args.batch:
        for name in styles:
            key = f"{name.replace(' ', '_').replace('-', '_')}_batch{batch}"
            print(f"{name + f' (batch {batch})':<34}{results[f'{key}_plain_ms_per_step']:>14}"
                  f"{results[f'{key}_overhead_us_per_step']:>18}{results[f'{key}_ratio']:>15}")


if __name__ == "__main__":
    main()
