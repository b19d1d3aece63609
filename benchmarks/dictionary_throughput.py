"""Feature-dictionary throughput on SmolLM2: inspect vs a plain forward, harvest and SAE training.

Cases, each in its own subprocess so its peak resident memory (``ru_maxrss``) is its own:
  inspect - forward pass with the site captured + SAE encode of every token, interleaved with a
            plain forward pass of the same batch; ``inspect_batch<B>_ratio`` = plain time /
            inspect time (throughput relative to a plain forward; target >= 0.9);
  harvest - :func:`harvest_texts` over registry texts (early stop after the site), tokens/s;
  train   - :func:`train_sae` on that harvest, tokens/s.
The dictionary is the shipped ``smollm2-res-sae`` (or a random SAE of the same shape if absent).

    python benchmarks/dictionary_throughput.py [--texts 256 --steps 40 --threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch
from overhead import interleaved

SITE = "blocks.12.resid_post"
TEXTS = ["The committee will publish its report on the new rail line next month, after talks.",
         "I loved this film: the acting is warm, the music is lovely and the ending made me cry.",
         "Are you coming to dinner tonight? Call me when you get this, we are at the usual place.",
         "Shares in the bank fell sharply after it warned of lower profits for the coming year.",
         "He said nothing for a long time, then laughed and asked whether we had seen the sea.",
         "Free entry in a weekly competition to win cup final tickets! Text WIN to claim now.",
         "The plot is thin and the jokes are stale, but the lead actor almost saves the film.",
         "Rain is expected across the north on Sunday, with sunny spells returning by Tuesday."]


def _dictionary(adapter):
    import polysteer as ps
    from polysteer.features import DictionaryInfo, SparseAutoencoder

    try:
        return ps.resolve_dictionary("smollm2-res-sae"), "smollm2-res-sae"
    except FileNotFoundError:
        torch.manual_seed(0)
        info = DictionaryInfo(adapter.model_fingerprint, SITE, 1.0)
        return SparseAutoencoder(576, 3072, info, "topk", 32), "random 3072x576 topk"


def _inspect(args: argparse.Namespace) -> dict:
    import polysteer as ps

    adapter = ps.load_model(args.model)
    d, name = _dictionary(adapter)
    out: dict = {"dictionary": name}
    for batch in args.batch:
        texts = (TEXTS * batch)[:batch]

        def plain(texts=texts):
            adapter.forward(texts)

        def inspect(texts=texts):
            with ps.steer(adapter, None, capture=[SITE]) as run:
                adapter.forward(texts)
            with torch.no_grad():
                d.encode(run.captured(SITE).float()) / d.scales

        timing = interleaved(plain, inspect, args.repeats)
        tokens = adapter.encode(texts, chat=False)["input_ids"].numel()
        out[f"inspect_batch{batch}_ratio"] = round(timing["plain_s"] / timing["steered_s"], 4)
        out[f"inspect_batch{batch}_tokens_per_second"] = round(tokens / timing["steered_s"], 1)
        out[f"plain_batch{batch}_tokens_per_second"] = round(tokens / timing["plain_s"], 1)
    return out


def _harvest(args: argparse.Namespace) -> dict:
    import polysteer as ps
    from polysteer.plugins.text.dictionary import DataConfig, harvest_texts, load_texts

    adapter = ps.load_model(args.model)
    texts, _ = load_texts(DataConfig(max_texts=args.texts // 4), progress=False)
    start = time.perf_counter()
    store = harvest_texts(adapter, texts, [SITE], args.store, progress=False)
    seconds = time.perf_counter() - start
    tokens = store.n_tokens(SITE)
    return {"harvest_tokens_per_second": round(tokens / seconds, 1), "harvest_tokens": tokens}


def _train(args: argparse.Namespace) -> dict:
    from polysteer.workflows import ActivationStore, TrainConfig, train_sae

    store = ActivationStore.open(args.store)
    cfg = TrainConfig(d_features=args.d_features, k=args.k, batch_size=1024, steps=args.steps,
                      eval_tokens=1024, log_every=args.steps)
    _, metrics = train_sae(store, cfg, site=SITE, progress=False)
    return {"train_tokens_per_second": round(metrics["tokens_per_second"], 1)}


CASES = {"inspect": _inspect, "harvest": _harvest, "train": _train}


def _child(case: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    result = CASES[case](args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**result, f"{case}_peak_rss_mib": round(peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--texts", type=int, default=256, help="texts harvested (all 4 corpora)")
    parser.add_argument("--d-features", type=int, default=3072)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_child(args.case, args)))
        return
    passthrough = [a for a in sys.argv[1:] if a != "--json"]
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, *passthrough, "--case", case,
                                  "--store", f"{tmp}/store"], check=True, capture_output=True,
                                 text=True).stdout
            results.update(json.loads(out.strip().splitlines()[-1]))
    results["config"] = {k: v for k, v in vars(args).items() if k not in ("json", "case", "store")}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"dictionary: {results['dictionary']} at {SITE} of {args.model} ({args.threads} thread(s))")
    for batch in args.batch:
        print(f"inspect batch {batch}: {results[f'inspect_batch{batch}_tokens_per_second']:>9,.0f} tok/s"
              f"   plain {results[f'plain_batch{batch}_tokens_per_second']:>9,.0f} tok/s"
              f"   inspect/plain throughput {results[f'inspect_batch{batch}_ratio']:.3f}")
    print(f"harvest: {results['harvest_tokens_per_second']:>9,.0f} tok/s "
          f"({results['harvest_tokens']} tokens)   peak RSS {results['harvest_peak_rss_mib']:.0f} MiB")
    print(f"train:   {results['train_tokens_per_second']:>9,.0f} tok/s "
          f"({args.d_features} features, k={args.k})   peak RSS {results['train_peak_rss_mib']:.0f} MiB")
    print(f"inspect peak RSS {results['inspect_peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
