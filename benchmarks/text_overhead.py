"""Overhead of steering SmolLM2-135M-Instruct: steered / plain ``generate`` in one process.

64 new tokens (forced: ``min_new_tokens`` = ``max_new_tokens``, so both sides do the same work),
greedy, batch 1 and 8, for one direction, a 3-component style and a reactive rule reading a
feature every step. Targets: ratio <= 1.02 (one direction) and <= 1.05 (the others).
``unsteered_record`` compares an unsteered ``adapter.generate`` (step clock and generation record)
with the transformers model's own ``generate``.

    python benchmarks/text_overhead.py [--model smollm2] [--tokens 64] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse

import torch
from overhead import cases, record_case, report, run_cases

import polysteer as ps

PROMPTS = ["Tell me about your weekend.", "Write a short poem about the sea.",
           "How do I bake bread?", "Describe your favourite city.", "What is a good book?",
           "Explain how rain forms.", "Give me advice for a job interview.", "Why is the sky blue?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    adapter = ps.load_model(args.model)
    styles = cases(adapter, ["blocks.9.resid_post", "blocks.12.resid_post", "blocks.15.resid_post"])
    batches = {b: adapter.encode((PROMPTS * b)[:b]) for b in args.batch}

    def generate(encoded):
        return adapter.generate(encoded, max_new_tokens=args.tokens, min_new_tokens=args.tokens)

    results = run_cases(adapter, styles, generate, batches, args.tokens, args.repeats)
    for batch, encoded in batches.items():  # the record and step clock of an unsteered generate
        def raw(encoded=encoded):
            with torch.no_grad():
                adapter.model.generate(**encoded, max_new_tokens=args.tokens, min_new_tokens=args.tokens)
        results.update(record_case(raw, lambda encoded=encoded: generate(encoded), args.tokens,
                                   args.repeats, f"unsteered_record_batch{batch}"))
    report(f"{args.model}, {args.tokens} new tokens, greedy, median of {args.repeats} interleaved pairs",
           results, args.json)


if __name__ == "__main__":
    main()
