"""Which layer should a new concept live at? A measured sweep over SmolLM2's decoder layers.

For each shipped concept spec (configs/concepts: contrastive pairs), the pairs are split in two:
even pairs build the concept (difference of means, as ``ps.concept`` builds it) at every
candidate layer's ``resid_post``, odd pairs are held out. With the concept added at
``--intensity`` (the default recommended intensity) at every position, teacher-forced:

- ``effect``: how much more likely held-out *positive* texts become than held-out *negative* ones
  (mean change in log-likelihood per token, positive minus negative): the concept is steered;
- ``cost``: how much less likely a fixed set of neutral texts becomes (mean NLL increase per
  token): coherence lost;
- ``score = effect - cost``.

The concept is built as ``ps.concept`` builds it (the same recipe), harvested once for every
candidate site. The best layer per concept and the layer with the best mean score are printed; the result goes
into ``core/shipped/concept_sites.json`` (``ps.concept``'s default site). ``--json`` prints one
JSON object. Runs on the CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

NEUTRAL = [
    "The train leaves the station at nine in the morning.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She put the keys on the kitchen table and sat down.",
    "The library opens on weekdays and closes early on Sundays.",
    "He planted tomatoes and beans in the garden last spring.",
    "The meeting was moved to the second floor conference room.",
    "A square has four sides of equal length.",
    "They walked along the river until it started to rain.",
]


def nll_per_token(adapter, texts: list[str]) -> torch.Tensor:
    """Mean negative log-likelihood per real token (first token left out), per text."""
    enc = adapter.encode(texts, chat=False, padding_side="right")
    with torch.no_grad():
        logits = adapter.model(**enc).logits.float()
    ids, mask = enc["input_ids"], enc["attention_mask"]
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    real = mask[:, 1:].float()
    return -(logp * real).sum(1) / real.sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--concepts", nargs="+", default=["positive", "formal", "concise", "cautious"])
    parser.add_argument("--layers", default="2:30:3", help="start:stop:step of decoder layers")
    parser.add_argument("--intensity", type=float, default=0.3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import polysteer as ps
    from polysteer.io import configs_dir
    from polysteer.plugins.text.concepts import ConceptSpec
    from polysteer.workflows import batched, collect, contrast_concept, renderer, row_selector

    torch.set_grad_enabled(False)
    adapter = ps.load_model(args.model)
    start, stop, step = (int(v) for v in args.layers.split(":"))
    layers = list(range(start, stop, step))
    sites = [f"blocks.{n}.resid_post" for n in layers]
    t0 = time.perf_counter()
    base_neutral = nll_per_token(adapter, NEUTRAL)
    rows = {}
    for name in args.concepts:
        spec = ConceptSpec.load(configs_dir() / "concepts" / f"{name}.yaml")
        pos, neg = spec.texts()
        train_pos, train_neg, test_pos, test_neg = pos[0::2], neg[0::2], pos[1::2], neg[1::2]
        base_pos, base_neg = nll_per_token(adapter, test_pos), nll_per_token(adapter, test_neg)
        per_layer = {}
        # ps.concept's recipe (renderer text, rows text-tokens, mean-diff, 8 per batch), harvested
        # once for every candidate site
        harvested = [collect(adapter, batched(texts, 8), sites, renderer=renderer("text"),
                             rows=row_selector("text-tokens")) for texts in (train_pos, train_neg)]
        for layer, site in zip(layers, sites, strict=True):
            c = contrast_concept(name, site, *harvested, model=adapter.model_fingerprint)
            style = ps.Style.from_concept(c, weight=1.0)
            with ps.steer(adapter, style, args.intensity):
                d_pos = base_pos - nll_per_token(adapter, test_pos)  # log-likelihood gain
                d_neg = base_neg - nll_per_token(adapter, test_neg)
                cost = float((nll_per_token(adapter, NEUTRAL) - base_neutral).mean())
            effect = float(d_pos.mean() - d_neg.mean())
            per_layer[layer] = {"effect": round(effect, 4), "cost": round(cost, 4),
                                "score": round(effect - cost, 4)}
            print(f"{name:12s} layer {layer:2d}: effect {effect:+.3f} cost {cost:+.3f}",
                  file=sys.stderr, flush=True)
        rows[name] = per_layer
    mean_score = {layer: sum(rows[c][layer]["score"] for c in rows) / len(rows) for layer in layers}
    best = max(mean_score, key=mean_score.get)
    n_layers = len({s.split(".")[1] for s in adapter.sites()})
    result = {"model": args.model, "layers": n_layers, "intensity": args.intensity,
              "best_layer": best, "best_site": f"blocks.{best}.resid_post",
              "relative_depth": round(best / n_layers, 3),
              "best_per_concept": {c: max(rows[c], key=lambda k, c=c: rows[c][k]["score"]) for c in rows},
              "mean_score": {str(k): round(v, 4) for k, v in mean_score.items()},
              "per_concept": {c: {str(k): v for k, v in r.items()} for c, r in rows.items()},
              "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'layer':>5} " + " ".join(f"{c[:10]:>10}" for c in rows) + f" {'mean':>8}")
    for layer in layers:
        print(f"{layer:5d} " + " ".join(f"{rows[c][layer]['score']:+10.3f}" for c in rows)
              + f" {mean_score[layer]:+8.3f}")
    print(f"best layer {best} of {n_layers} (relative depth {result['relative_depth']}); "
          f"per concept {result['best_per_concept']}")


if __name__ == "__main__":
    main()
