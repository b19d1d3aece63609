"""How often the ``cautious-on-spam`` rule fires on held-out SMS given as chat prompts.

Held-out SMS (the test part of the split ``scripts/build_spam_classifier.py`` holds out: never
fitted on) are wrapped in a chat question and generated for a few tokens under the style; a
row counts as fired when the rule fired on it at any step. Prints fired/total for spam and ham.

    python scripts/measure_spam_rule.py --count 40
"""

from __future__ import annotations

import argparse
import random


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=40, help="spam and ham messages each (default 40)")
    p.add_argument("--limit", type=int, default=1200, help="the build script's SMS sample")
    p.add_argument("--tokens", type=int, default=2)
    args = p.parse_args()

    import polysteer as ps
    from polysteer.data import load_dataset

    test = load_dataset("sms-spam").sample(args.limit, seed=0).split(test_fraction=1 / 3, seed=0)[1]
    rng = random.Random(0)
    groups = {}
    for label in ("spam", "ham"):
        texts = [t for t, lab in zip(test.texts, test.labels, strict=True) if str(lab) == label]
        groups[label] = rng.sample(texts, min(args.count, len(texts)))
    model, style = ps.load_model("smollm2"), ps.load_style("cautious-on-spam")
    for label, texts in groups.items():
        fired = 0
        for start in range(0, len(texts), 8):
            prompts = [f"I got this text: '{t}' What should I do?" for t in texts[start:start + 8]]
            with ps.steer(model, style, 1.0) as run:
                model.generate(prompts, max_new_tokens=args.tokens)
            fired += len({r for e in run.rule_events() for r in e["rows"]})
        print(f"{label}: the rule fired on {fired} of {len(texts)}", flush=True)


if __name__ == "__main__":
    main()
