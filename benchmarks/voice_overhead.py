"""Overhead of steering the embedded Piper voice (joe): steered / plain synthesis in one process.

One VITS pass per utterance (phonemised once beforehand, so espeak is not timed), fixed noise seed,
batch 1 and 4, for one direction (``decoder.input``), a 3-component style (``decoder.input``,
``text_encoder.project``, ``flow.2``; a ramp schedule and a last-third span mask), a
reactive rule reading a feature in the pass, and the shipped ``joe-higher-pitch`` style. Also the
real-time factor (synthesis seconds per second of audio) of plain synthesis. Target: ratio <= 1.03.
Every site is downstream of the duration predictor, so steered and plain runs make the same number
of frames (a site it reads would change the utterance's length, and the work with it).

``--cpu-time`` times with this process's CPU time instead of the wall clock: on a machine shared
with other jobs, wall-clock times of the same synthesis vary by 2-3x, CPU time much less.

    python benchmarks/voice_overhead.py [--voice joe] [--repeats 5] [--cpu-time] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import overhead
import torch
from overhead import report, run_cases

import polysteer as ps

SITES = ["decoder.input", "text_encoder.project", "flow.2"]  # after the durations: same work steered
SENTENCES = ["The weather is lovely today, and the garden is full of roses.",
             "Could you pass me the salt, please?",
             "Our flight leaves early in the morning, so we should pack tonight.",
             "The children built a castle out of sand."]


def voice_cases(adapter, sites: list[str]) -> dict[str, ps.Style]:
    """The shared cases (a last-third span mask) and the shipped ``joe-higher-pitch`` style."""
    return {**overhead.cases(adapter, sites, positions={"kind": "span", "start": 0.66}),
            "joe-higher-pitch": ps.load_style("joe-higher-pitch")}


class _CpuClock:
    """Stands in for the ``time`` module in the shared helpers: ``perf_counter`` is CPU time."""

    perf_counter = staticmethod(time.process_time)


def real_time_factor(adapter, inputs, repeats: int) -> float:
    """Median synthesis time over the seconds of audio made (below 1: faster than real time)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        speech = adapter.generate(inputs, seed=0)
        times.append(time.perf_counter() - t0)
    audio = speech.seconds.sum().item()
    return statistics.median(times) / audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", default="joe", help="embedded voice or VITS folder")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-time", action="store_true", help="time with process CPU time")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.cpu_time:  # the shared timing helpers read time.perf_counter through this module
        overhead.time = _CpuClock()
    from polysteer.plugins.voice.phonemes import phonemize

    adapter = ps.load_model({"kind": "vits", "name": args.voice})
    phonemes = [phonemize(s, adapter.espeak_voice) for s in SENTENCES]
    styles = voice_cases(adapter, SITES)
    batches = {b: {"phonemes": (phonemes * b)[:b]} for b in args.batch}

    def generate(inputs):
        return adapter.generate(inputs, seed=0)

    results = run_cases(adapter, styles, generate, batches, 1, args.repeats)
    for b, inputs in batches.items():
        results[f"real_time_factor_batch{b}"] = round(real_time_factor(adapter, inputs, args.repeats), 4)
    clock = "CPU time" if args.cpu_time else "wall clock"
    report(f"{args.voice}, one VITS pass per batch (ms/step = ms per synthesis), 1 thread, {clock}, "
           f"median of {args.repeats} interleaved pairs", results, args.json)
    if not args.json:
        for b in args.batch:
            print(f"real-time factor, batch {b}: {results[f'real_time_factor_batch{b}']} "
                  "(synthesis seconds per second of audio)")


if __name__ == "__main__":
    main()
