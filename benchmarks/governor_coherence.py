"""The coherence governor on SmolLM2: at twice a style's shipped intensity, does the governor keep
the text coherent while keeping most of the concept?

For each style: held-out prompts (sharing no text with the concept's examples or the neutral
probes) generated greedily unsteered, at the style's intensity 1.0 (its shipped "works" setting),
at 2.0 without a governor and at 2.0 with the governor (default settings: entropy signal, range
measured on the neutral probes). Coherence is the perplexity of the generated tokens under the
unsteered model (``text_perplexity``); the concept score is the style's concept read back by the
unsteered model (``text_<concept>``). The bound is the perplexity at intensity 1.0.

    python benchmarks/governor_coherence.py [--styles positive formal] [--tokens 32] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import polysteer as ps
from polysteer.plugins.text.measures import concept_measure, text_perplexity

HELD_OUT = [
    "Write a few lines about the harbour at dawn.",
    "What should I know before adopting a cat?",
    "Describe your neighbour's garden.",
    "Summarise how trains changed travel.",
    "Give me advice for a job interview.",
    "What happens at a farmers' market?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", nargs="+", default=["positive", "formal"])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=len(HELD_OUT))
    parser.add_argument("--strength", type=float, default=2.0, help="the over-strong intensity")
    parser.add_argument("--governor", default="entropy", help="governor signal (entropy, activation)")
    parser.add_argument("--calibrated-only", action="store_true",
                        help="only the governor whose range is measured under the style at 1.0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    llm = ps.load_model("smollm2")
    prompts = HELD_OUT[: args.prompts]
    gen = {"max_new_tokens": args.tokens}
    started = time.perf_counter()
    base = llm.generate(prompts, **gen)
    results = {}
    for name in args.styles:
        style = ps.load_style(name)
        concept = concept_measure(name)
        rows = {"unsteered": base}
        with ps.steer(llm, style, 1.0):
            rows["x1"] = llm.generate(prompts, **gen)
        with ps.steer(llm, style, args.strength):
            rows[f"x{args.strength:g}"] = llm.generate(prompts, **gen)
        runs = {}
        if not args.calibrated_only:  # range from the unsteered model on the neutral probes
            with ps.steer(llm, style, args.strength, governor=args.governor) as runs["probes"]:
                rows[f"x{args.strength:g}+governor"] = llm.generate(prompts, **gen)
        # range: the typical (median) signal of the style at intensity 1.0 on the neutral probes
        calibrated = {"signal": args.governor, "at": 1.0, "quantile": 0.5}
        with ps.steer(llm, style, args.strength, governor=calibrated) as runs["calibrated"]:
            rows[f"x{args.strength:g}+governor@1"] = llm.generate(prompts, **gen)
        gains = {k: [g for t in r.governor_trace() for g in t["gain"]] for k, r in runs.items()}
        out = {k: {"perplexity": text_perplexity(g), "concept": concept(g), "texts": g.texts}
               for k, g in rows.items()}
        bound = out["x1"]["perplexity"]
        strong = out[f"x{args.strength:g}"]
        lift = strong["concept"] - out["unsteered"]["concept"]
        results[name] = {"conditions": out, "bound_perplexity": bound, "governors": {}}
        for kind, run in runs.items():
            governed = out[f"x{args.strength:g}+governor" + ("@1" if kind == "calibrated" else "")]
            results[name]["governors"][kind] = {
                "within_bound": governed["perplexity"] <= bound,
                "concept_kept_vs_ungoverned": (governed["concept"] - out["unsteered"]["concept"]) / lift
                if lift else math.nan,
                "concept_kept_vs_x1": (governed["concept"] - out["unsteered"]["concept"])
                / (out["x1"]["concept"] - out["unsteered"]["concept"]),
                "mean_gain": sum(gains[kind]) / len(gains[kind]) if gains[kind] else 1.0,
                "range": run.governor.ranges[""].describe() if run.governor.signal else None}
    results["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'style':<10} {'condition':<16} {'perplexity':>10} {'concept':>8}")
    for name in args.styles:
        r = results[name]
        for cond, v in r["conditions"].items():
            print(f"{name:<10} {cond:<16} {v['perplexity']:>10.2f} {v['concept']:>8.3f}")
        for kind, g in r["governors"].items():
            print(f"{name:<10} governor ({kind} range) within bound ({r['bound_perplexity']:.2f}): "
                  f"{g['within_bound']}; concept kept vs x{args.strength:g}: "
                  f"{g['concept_kept_vs_ungoverned']:.0%}, vs x1: {g['concept_kept_vs_x1']:.0%}; "
                  f"mean gain {g['mean_gain']:.2f}")


if __name__ == "__main__":
    main()
