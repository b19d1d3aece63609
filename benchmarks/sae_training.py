"""SAE training throughput and peak memory, against a plain dense matmul training pass.

Each case runs in its own subprocess so ``ru_maxrss`` (peak resident memory) is its own. Also
measures harvest tokens/s on the reference model. ``--json`` prints one JSON object.

    python benchmarks/sae_training.py [--d-in 576 --d-features 4608 --k 32 --steps 30] [--json]
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


def _data(args: argparse.Namespace) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(args.batch_size * 8, args.d_in, generator=g)


def _sae(args: argparse.Namespace) -> dict:
    from polysteer.workflows import TrainConfig, train_sae

    cfg = TrainConfig(d_features=args.d_features, k=args.k, batch_size=args.batch_size,
                      steps=args.steps, eval_tokens=args.batch_size, log_every=args.steps)
    _, metrics = train_sae(_data(args), cfg, progress=False)
    return {"tokens_per_second": metrics["tokens_per_second"]}


def _baseline(args: argparse.Namespace) -> dict:
    """The floor: a dense linear autoencoder of the same size, forward + backward + Adam."""
    x = _data(args)
    enc = torch.nn.Parameter(torch.randn(args.d_in, args.d_features) * 0.01)
    dec = torch.nn.Parameter(torch.randn(args.d_features, args.d_in) * 0.01)
    opt = torch.optim.Adam([enc, dec], lr=1e-3)
    batches = x.split(args.batch_size)
    start = time.perf_counter()
    for step in range(args.steps):
        b = batches[step % len(batches)]
        loss = (torch.relu(b @ enc) @ dec - b).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    return {"tokens_per_second": args.steps * args.batch_size / seconds}


def _harvest(args: argparse.Namespace) -> dict:
    from polysteer.models import ReferenceAdapter, ReferenceConfig, ReferenceLM, reference_prompts
    from polysteer.workflows import harvest

    adapter = ReferenceAdapter(ReferenceLM(ReferenceConfig(d_model=256, n_layers=4, n_heads=4)))
    ids = reference_prompts(samples=512, length=64, vocab=64)
    batches = [list(ids[i:i + 32]) for i in range(0, len(ids), 32)]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        store = harvest(adapter, batches, ["blocks.1.resid_post"], folder,
                        forward=lambda b: adapter.logits(torch.stack(list(b))), progress=False)
        seconds = time.perf_counter() - start
        tokens = store.n_tokens("blocks.1.resid_post")
    return {"tokens_per_second": tokens / seconds, "tokens": tokens}


CASES = {"sae": _sae, "baseline": _baseline, "harvest": _harvest}


def _child(case: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    result = CASES[case](args)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {**result, "peak_rss_mib": peak_kib / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-features", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_child(args.case, args)))
        return
    passthrough = [a for a in sys.argv[1:] if a != "--json"]
    results = {}
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, *passthrough, "--case", case],
                             check=True, capture_output=True, text=True).stdout
        results[case] = json.loads(out.strip().splitlines()[-1])
    sae, baseline = results["sae"]["tokens_per_second"], results["baseline"]["tokens_per_second"]
    results["sae_vs_baseline"] = sae / baseline
    results["config"] = {k: v for k, v in vars(args).items() if k not in ("json", "case")}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for case in CASES:
        r = results[case]
        print(f"{case:9s} {r['tokens_per_second']:>12,.0f} tokens/s   peak RSS {r['peak_rss_mib']:7.0f} MiB")
    print(f"SAE training / dense baseline: {results['sae_vs_baseline']:.2f}x")


if __name__ == "__main__":
    main()
