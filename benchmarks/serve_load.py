"""Load test of ``polysteer serve``: N concurrent clients, each with its own style, on loopback.

The benchmark starts the server itself (uvicorn on a free 127.0.0.1 port; it never talks to
another host) and runs, with greedy decoding and ``ignore_eos`` so every answer has ``--tokens``
tokens:

  solo        - each client's request alone, one after another (the reference answers, and the
                throughput of N sequential clients);
  steered     - N concurrent clients, client i steered by style i (all distinct), ``--rounds``
                requests each; every answer is compared with its solo answer: a difference is
                cross-talk (must be 0);
  unsteered   - the same concurrent load without steering.

The steered and unsteered loads alternate ``--repeats`` times (throughput: the median run).
Figures: completion tokens/s, p50/p95 request latency, and ratios measured in the same process:
``steered_unsteered_throughput_ratio`` (target >= 0.9), ``steered_unsteered_p50_ratio`` /
``_p95_ratio`` (latency, lower is better), ``batching_throughput_ratio`` (N concurrent vs N
sequential clients, steered; target >= 3 at N = 8).

    python benchmarks/serve_load.py [--model smollm2] [--clients 8] [--tokens 16] [--rounds 2]
                                    [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

SMOLLM2_STYLES = ["pirate", "concise", "formal", "positive", "french", "golden-gate", "cautious",
                  "friendly-concise"]
PROMPTS = ["Tell me about your weekend.", "Describe a rainy Monday.", "What is a good breakfast?",
           "Write a note to a friend.", "How do I fix a flat tyre?", "Why is the sky blue?",
           "Give me a tip for learning to cook.", "What should I read next?"]
TINY_PROMPTS = ["the cat sat on the mat", "hello friend", "a red ship on the blue sea", "good day",
                "the dog was very happy", "gold gate bridge", "the night was bad", "a happy friend"]


def _model(name: str) -> tuple[Any, list[Any], list[str]]:
    """The adapter, one distinct steering field per client slot, and the prompts."""
    import polysteer as ps

    if name == "tiny":
        import torch

        from polysteer.plugins.text.testing import tiny_text_adapter

        adapter = tiny_text_adapter()
        vectors = [v / v.norm() for v in torch.randn(8, 32, generator=torch.Generator().manual_seed(1))]
        dirs = ps.direction_set(vectors, [f"dir{i}" for i in range(8)], site="blocks.1.resid_post",
                                site_norm=2.0, model=adapter.model_fingerprint, method="random",
                                scales=[1.0] * 8)
        dirs.save("tiny-dirs")  # found by name in the working folder
        steerings = [{"features": [{"dictionary": "tiny-dirs", "feature": i % 8,
                                    "weight": (0.5 + i / 8) * (-1) ** i}]} for i in range(64)]
        return adapter, steerings, TINY_PROMPTS
    adapter = ps.load_model(name)
    steerings = [{"style": SMOLLM2_STYLES[i % 8], "intensity": round(1.0 - 0.1 * (i // 8), 2)}
                 for i in range(64)]
    return adapter, steerings, PROMPTS


@contextlib.contextmanager
def _server(adapter: Any, name: str, max_batch: int) -> Iterator[tuple[str, Any]]:
    import uvicorn

    from polysteer.serve import ServeLimits, create_app

    app = create_app(adapter, name=name, limits=ServeLimits(max_batch=max_batch, max_queue=256,
                                                            batch_window_s=0.05))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.engine
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


PROGRESS: Any = None
"""A tqdm bar over every request (stderr), set by :func:`run`."""


def _ask(client: Any, url: str, name: str, prompt: str, tokens: int, steering: Any) -> tuple[list, float]:
    body = {"model": name, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "ignore_eos": True, "return_token_ids": True}
    if steering is not None:
        body["steering"] = steering
    start = time.perf_counter()
    r = client.post(f"{url}/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    if PROGRESS is not None:
        PROGRESS.update(1)
    return r.json()["choices"][0]["token_ids"], elapsed


def _concurrent(url: str, name: str, jobs: list[tuple[str, Any]], clients: int, rounds: int,
                tokens: int) -> tuple[dict[int, list], list[float], float, int]:
    """Each client i sends job i ``rounds`` times; (answers per client, latencies, seconds, tokens)."""
    import httpx

    answers: dict[int, list] = {i: [] for i in range(clients)}
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        prompt, steering = jobs[i]
        with httpx.Client(timeout=600) as c:
            barrier.wait()
            for _ in range(rounds):
                ids, elapsed = _ask(c, url, name, prompt, tokens, steering)
                with lock:
                    answers[i].append(ids)
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    total = sum(len(a) for runs in answers.values() for a in runs)
    return answers, latencies, seconds, total


def run(args: argparse.Namespace) -> dict[str, Any]:
    global PROGRESS
    import httpx
    from tqdm import tqdm

    adapter, steerings, prompts = _model(args.model)
    jobs = [(prompts[i % len(prompts)], steerings[i]) for i in range(args.clients)]
    plain_jobs = [(p, None) for p, _ in jobs]
    batch_sizes: dict[bool, list[int]] = {True: [], False: []}
    PROGRESS = tqdm(total=1 + 2 * args.clients * (1 + args.rounds * args.repeats), unit="request",
                    desc="serve_load", file=sys.stderr)
    with _server(adapter, args.model, args.max_batch) as (url, engine):
        with httpx.Client(timeout=600) as c:  # warm up (loads, caches)
            _ask(c, url, args.model, prompts[0], 2, steerings[0])
            solo, solo_latency = [], []
            start = time.perf_counter()
            for prompt, steering in jobs:
                ids, elapsed = _ask(c, url, args.model, prompt, args.tokens, steering)
                solo.append(ids)
                solo_latency.append(elapsed)
            solo_seconds = time.perf_counter() - start
            plain_solo = [_ask(c, url, args.model, p, args.tokens, None)[0] for p, _ in plain_jobs]
        steered: dict[int, list] = {i: [] for i in range(args.clients)}
        plain: dict[int, list] = {i: [] for i in range(args.clients)}
        steered_lat: list[float] = []
        plain_lat: list[float] = []
        steered_tps_runs, plain_tps_runs = [], []
        for repeat in range(args.repeats):  # alternate the order: a shared machine drifts
            order = [True, False] if repeat % 2 == 0 else [False, True]
            for is_steered in order:
                engine.batches.clear()
                answers, lat, seconds, tokens = _concurrent(
                    url, args.model, jobs if is_steered else plain_jobs, args.clients,
                    args.rounds, args.tokens)
                for i, runs in answers.items():
                    (steered if is_steered else plain)[i].extend(runs)
                (steered_lat if is_steered else plain_lat).extend(lat)
                (steered_tps_runs if is_steered else plain_tps_runs).append(tokens / seconds)
                batch_sizes[is_steered].extend(engine.batches)
    PROGRESS.close()
    PROGRESS = None
    crosstalk = sum(a != solo[i] for i, runs in steered.items() for a in runs) + \
        sum(a != plain_solo[i] for i, runs in plain.items() for a in runs)
    distinct = len({tuple(s) for s in solo})
    steered_tps = statistics.median(steered_tps_runs)
    plain_tps = statistics.median(plain_tps_runs)
    sequential_tps = sum(len(s) for s in solo) / solo_seconds
    return {
        "model": args.model, "clients": args.clients, "rounds": args.rounds, "tokens": args.tokens,
        "max_batch": args.max_batch, "repeats": args.repeats,
        "requests": 2 * args.clients * args.rounds * args.repeats + 2 * args.clients,
        "sequential_tokens_per_s": round(sequential_tps, 2),
        "steered_tokens_per_s": round(steered_tps, 2),
        "unsteered_tokens_per_s": round(plain_tps, 2),
        "steered_p50_s": round(statistics.median(steered_lat), 3),
        "steered_p95_s": round(_percentile(steered_lat, 0.95), 3),
        "unsteered_p50_s": round(statistics.median(plain_lat), 3),
        "unsteered_p95_s": round(_percentile(plain_lat, 0.95), 3),
        "sequential_p50_s": round(statistics.median(solo_latency), 3),
        "steered_unsteered_throughput_ratio": round(steered_tps / plain_tps, 3),
        "steered_unsteered_p50_ratio": round(statistics.median(steered_lat) /
                                             statistics.median(plain_lat), 3),
        "steered_unsteered_p95_ratio": round(_percentile(steered_lat, 0.95) /
                                             _percentile(plain_lat, 0.95), 3),
        "batching_throughput_ratio": round(steered_tps / sequential_tps, 3),
        "steered_mean_batch": round(statistics.mean(batch_sizes[True]), 2),
        "unsteered_mean_batch": round(statistics.mean(batch_sizes[False]), 2),
        "crosstalk": crosstalk,
        "distinct_steered_answers": distinct,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help="smollm2 (default), another text model, or "
                   "'tiny' (a random 2-layer model, for a quick check of the harness)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients, 1..64 (default 8)")
    p.add_argument("--rounds", type=int, default=2, help="requests per client (default 2)")
    p.add_argument("--tokens", type=int, default=16, help="tokens per answer (default 16)")
    p.add_argument("--repeats", type=int, default=3,
                   help="steered and unsteered loads, alternating; medians reported (default 3)")
    p.add_argument("--max-batch", type=int, default=8, help="server batch size (default 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 64:
        p.error("--clients must be 1..64")
    figures = run(args)
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return 1 if figures["crosstalk"] else 0


if __name__ == "__main__":
    sys.exit(main())
