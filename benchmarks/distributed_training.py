"""Harvest and SAE training tokens/s with 1 and 2 processes under torchrun (gloo on the CPU).

Each configuration runs as its own ``python -m torch.distributed.run --nproc-per-node N`` job of
this script (``--worker``), so the 1-process figure goes through the same code (one process group,
DistributedDataParallel with one rank) as the 2-process one. Every process gets ``--threads``
torch threads (default 1), so 2 processes use twice the cores of 1: the ratio is the scaling.

* ``sae``: :func:`~polysteer.workflows.train_sae` on random rows (a TopK SAE), global batch fixed,
  so each of N ranks computes ``batch / N`` rows per step and the gradients are all-reduced;
* ``harvest``: :func:`~polysteer.workflows.harvest_sharded` of a 4-layer reference model
  (d_model 256) over 512 prompts of 64 tokens into one store, rank 0 publishing the manifest.

    python benchmarks/distributed_training.py [--steps 60 --d-in 256 --d-features 2048] [--json]

Ratios ``*_2proc_ratio`` are 2-process tokens/s over 1-process tokens/s (above 1: faster).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(args: argparse.Namespace) -> None:
    from polysteer.models import ReferenceAdapter, ReferenceConfig, ReferenceLM, reference_prompts
    from polysteer.workflows import (
        TrainConfig,
        barrier,
        harvest,
        harvest_sharded,
        init_distributed,
        shutdown_distributed,
        train_sae,
    )

    torch.set_num_threads(args.threads)
    info = init_distributed("cpu")
    out: dict[str, float] = {}
    if args.case == "sae":
        g = torch.Generator().manual_seed(0)
        rows = torch.randn(args.batch_size * 16, args.d_in, generator=g)
        cfg = TrainConfig(d_features=args.d_features, k=args.k, batch_size=args.batch_size,
                          steps=args.steps, eval_tokens=args.batch_size, log_every=args.steps,
                          resample=False)
        _, metrics = train_sae(rows, cfg, progress=False)
        out = {"tokens_per_second": metrics["tokens_per_second"]}
    else:
        adapter = ReferenceAdapter(ReferenceLM(ReferenceConfig(d_model=256, n_layers=4, n_heads=4)))
        ids = reference_prompts(samples=args.prompts, length=64, vocab=64)
        batches = [list(ids[i:i + 32]) for i in range(0, len(ids), 32)]

        def run(**kw):
            return harvest(adapter, kw.pop("batches"), ["blocks.1.resid_post"], kw.pop("folder"),
                           forward=lambda b: adapter.logits(torch.stack(list(b))), **kw)

        folder = Path(args.folder)
        barrier()
        start = time.perf_counter()
        store = harvest_sharded(run, batches, folder, progress=False)
        seconds = time.perf_counter() - start
        out = {"tokens_per_second": store.n_tokens("blocks.1.resid_post") / seconds}
    if info.is_main:
        Path(args.out).write_text(json.dumps(out))
    shutdown_distributed()


def _launch(case: str, procs: int, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
               "--master-addr", "127.0.0.1", "--master-port", str(_port()), __file__, "--worker",
               "--case", case, "--out", str(out), "--folder", str(Path(tmp) / "store"),
               *[f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                 if k in ("steps", "d_in", "d_features", "k", "batch_size", "threads", "prompts")]]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if done.returncode:
            raise SystemExit(f"{case} with {procs} processes failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())["tokens_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--d-in", type=int, default=256)
    parser.add_argument("--d-features", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", default="sae", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    results: dict[str, float | int | str] = {"cpus": os.cpu_count() or 0,
                                             "threads_per_process": args.threads}
    for case in ("sae", "harvest"):
        one, two = _launch(case, 1, args), _launch(case, 2, args)
        results[f"{case}_1proc_tokens_per_second"] = round(one, 1)
        results[f"{case}_2proc_tokens_per_second"] = round(two, 1)
        results[f"{case}_2proc_ratio"] = round(two / one, 3)
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'case':<10}{'1 process tok/s':>18}{'2 processes tok/s':>20}{'ratio':>8}")
    for case in ("sae", "harvest"):
        print(f"{case:<10}{results[f'{case}_1proc_tokens_per_second']:>18}"
              f"{results[f'{case}_2proc_tokens_per_second']:>20}{results[f'{case}_2proc_ratio']:>8}")
    print(f"({results['cpus']} CPUs, {args.threads} torch thread(s) per process)")


if __name__ == "__main__":
    main()
