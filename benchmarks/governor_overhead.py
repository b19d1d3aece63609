"""Cost of the coherence governor on SmolLM2-135M-Instruct: governed / ungoverned steered
``generate``, in one process.

Both sides steer with the same one-direction style (a random direction at ``blocks.9.resid_post``,
intensity 1.0) for ``--tokens`` forced new tokens, greedy, at batch 1 and 8; the governed side adds
the governor (default: the ``entropy`` signal with its range measured on the neutral probes, once,
before timing). Ratios are medians of interleaved pairs (see ``overhead.py``):
``governor_overhead_batch<B>_ratio`` (target <= 1.05) and ``..._hook_ratio`` (the time spent inside
all hooks added to the ungoverned time, over the ungoverned time).

    python benchmarks/governor_overhead.py [--model smollm2] [--signal entropy] [--tokens 32]
        [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics

from overhead import cases, hook_seconds, interleaved

import polysteer as ps

PROMPTS = ["Tell me about your weekend.", "Write a short poem about the sea.",
           "How do I bake bread?", "Describe your favourite city.", "What is a good book?",
           "Explain how rain forms.", "Give me advice for a job interview.", "Why is the sky blue?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--site", default="blocks.9.resid_post")
    parser.add_argument("--signal", default="entropy", help="governor signal (entropy, activation)")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    adapter = ps.load_model(args.model)
    style = cases(adapter, [args.site] * 3)["one direction"]
    governor = {"signal": args.signal}
    results: dict[str, float] = {}
    for batch in args.batch:
        encoded = adapter.encode((PROMPTS * batch)[:batch])

        def plain(encoded=encoded):
            with ps.steer(adapter, style, 1.0):
                adapter.generate(encoded, max_new_tokens=args.tokens, min_new_tokens=args.tokens)

        def governed(encoded=encoded):
            with ps.steer(adapter, style, 1.0, governor=governor):
                adapter.generate(encoded, max_new_tokens=args.tokens, min_new_tokens=args.tokens)

        governed()  # measures the signal's range on the neutral probes once (cached per model)
        timing = interleaved(plain, governed, args.repeats)
        extra = statistics.median([hook_seconds(governed, 1) - hook_seconds(plain, 1)
                                   for _ in range(3)])
        key = f"governor_overhead_batch{batch}"
        results[f"{key}_ratio"] = round(timing["ratio"], 4)
        results[f"{key}_hook_ratio"] = round((timing["plain_s"] + max(extra, 0.0)) / timing["plain_s"], 4)
        results[f"{key}_steered_ms_per_step"] = round(timing["plain_s"] / args.tokens * 1e3, 3)
        results[f"{key}_governed_ms_per_step"] = round(timing["steered_s"] / args.tokens * 1e3, 3)
    if args.json:
        print(json.dumps(results))
        return
    print(f"{args.model}, governor signal {args.signal!r}, {args.tokens} new tokens, greedy, "
          f"median of {args.repeats} interleaved pairs")
    print(f"{'batch':<8}{'steered ms/step':>17}{'governed ms/step':>18}{'ratio':>9}{'hook ratio':>12}")
    for batch in args.batch:
        key = f"governor_overhead_batch{batch}"
        print(f"{batch:<8}{results[f'{key}_steered_ms_per_step']:>17}"
              f"{results[f'{key}_governed_ms_per_step']:>18}{results[f'{key}_ratio']:>9}"
              f"{results[f'{key}_hook_ratio']:>12}")


if __name__ == "__main__":
    main()
