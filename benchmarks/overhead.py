"""Shared pieces of the overhead benchmarks: the three steering cases and interleaved timing.

Every case reports two ratios: ``<case>_ratio``, steered / plain wall clock (interleaved pairs; on a
shared machine it carries a few percent of noise), and ``<case>_hook_ratio``, (plain + the time spent
inside the forward hooks a steered run installs) / plain: the runtime's own cost, which that noise
hides. The first also catches indirect costs (a slower layout, a synchronisation); the second does
not, so read them together.

Cases (all on random directions tied to the model, so no concept files are needed):
  one direction     - one ``add`` component;
  3-component style - three sites, with a ramp schedule and a position mask (generated-only for
                      text, a span or region for voice and images);
  reactive rule     - a rule reading a feature every step and switching a component on.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import polysteer as ps


def _dictionary(adapter, site: str, seed: int) -> ps.DirectionSet:
    g = torch.Generator().manual_seed(seed)
    return ps.direction_set([torch.randn(adapter.bind(site).channels, generator=g)], ["f"], site=site,
                            site_norm=1.0, model=adapter.model_fingerprint, method="random")


def _style(data: dict, dictionaries: list) -> ps.Style:
    style = ps.Style.from_dict(data)
    for comp, d in zip(style.components, dictionaries, strict=True):
        comp.dictionary = d
    for rule in style.rules:
        rule.dictionary = dictionaries[0]
    return style


def cases(adapter, sites: list[str], positions: Any = "generated") -> dict[str, ps.Style]:
    """The three steering cases on ``sites`` (three site names; the first is used alone).

    ``positions`` is the mask of the style's third component (``generated`` for text; a span or
    region mask for modalities without a prompt).
    """
    dicts = [_dictionary(adapter, s, i) for i, s in enumerate(sites)]
    feature = {"dictionary": "d", "feature": "f"}
    return {
        "one direction": _style({"components": [{**feature, "weight": 0.1}]}, dicts[:1]),
        "3-component style": _style({"components": [
            {"name": "a", **feature, "weight": 0.1},
            {"name": "b", **feature, "weight": 0.1, "schedule": {"kind": "ramp", "end": 0.5}},
            {"name": "c", **feature, "weight": 0.1, "positions": positions}]}, dicts),
        "reactive rule": _style({
            "components": [{"name": "a", **feature, "weight": 0.1, "enabled": False}],
            "rules": [{"when": {**feature, "above": 0.5}, "then": {"apply": "a", "steps": 4}}]},
            dicts[:1]),
    }


def interleaved(plain: Callable[[], Any], steered: Callable[[], Any], repeats: int
                ) -> dict[str, float]:
    """Median times of ``plain`` and ``steered`` run in pairs, and the median of the pairs' ratios.

    Each pair runs back to back, in alternating order, so slow drifts of a shared machine's speed
    cancel within a pair and neither side always runs second (medians of paired ratios over 21
    pairs agreed to about 1% between runs here; the best time of each side drifted by 6%).
    """
    plain(), steered()  # warm up
    p_times, s_times = [], []
    for i in range(repeats):
        first, second = (plain, steered) if i % 2 else (steered, plain)
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        p, s = (t1 - t0, t2 - t1) if i % 2 else (t2 - t1, t1 - t0)
        p_times.append(p), s_times.append(s)
    return {"plain_s": statistics.median(p_times), "steered_s": statistics.median(s_times),
            "ratio": statistics.median(s / p for s, p in zip(s_times, p_times, strict=True))}


@contextlib.contextmanager
def timed_hooks():
    """Time every forward hook and pre-hook registered on any module inside the block; yields a
    one-item list holding the seconds spent in them so far."""
    spent = [0.0]
    originals = nn.Module.register_forward_hook, nn.Module.register_forward_pre_hook

    def timing(register):
        def register_timed(module, hook, *args, **kwargs):
            def timed(*a, **k):
                start = time.perf_counter()
                try:
                    return hook(*a, **k)
                finally:
                    spent[0] += time.perf_counter() - start
            return register(module, timed, *args, **kwargs)
        return register_timed

    nn.Module.register_forward_hook, nn.Module.register_forward_pre_hook = map(timing, originals)
    try:
        yield spent
    finally:
        nn.Module.register_forward_hook, nn.Module.register_forward_pre_hook = originals


def hook_seconds(steered: Callable[[], Any], repeats: int) -> float:
    """Median seconds per run spent inside the hooks that ``steered`` installs."""
    runs = []
    for _ in range(repeats):
        with timed_hooks() as spent:
            steered()
        runs.append(spent[0])
    return statistics.median(runs)


def run_cases(adapter, styles: dict[str, ps.Style], generate: Callable[[Any], Any],
              batches: dict[int, Any], tokens: int, repeats: int) -> dict[str, float]:
    """Time every case at every batch size; keys ``<case>_batch<B>_ratio``, ``..._hook_ratio`` and
    per-step costs."""
    results: dict[str, float] = {}
    for batch, inputs in batches.items():
        for name, style in styles.items():
            def steered(style=style, inputs=inputs):
                with ps.steer(adapter, style, intensity=1.0):
                    generate(inputs)
            timing = interleaved(lambda inputs=inputs: generate(inputs), steered, repeats)
            hooks = hook_seconds(steered, max(3, repeats // 3))
            key = f"{name.replace(' ', '_').replace('-', '_')}_batch{batch}"
            results[f"{key}_ratio"] = round(timing["ratio"], 4)
            results[f"{key}_hook_ratio"] = round((timing["plain_s"] + hooks) / timing["plain_s"], 4)
            results[f"{key}_plain_ms_per_step"] = round(timing["plain_s"] / tokens * 1e3, 3)
            results[f"{key}_overhead_us_per_step"] = round(
                (timing["steered_s"] - timing["plain_s"]) / tokens * 1e6, 1)
            results[f"{key}_hook_us_per_step"] = round(hooks / tokens * 1e6, 1)
    return results


def record_case(raw: Callable[[], Any], plain: Callable[[], Any], tokens: int, repeats: int,
                key: str) -> dict[str, float]:
    """The cost of an unsteered ``adapter.generate`` (its step clock and generation record) against
    the model called directly: ``<key>_ratio``, ``<key>_hook_ratio`` and per-step costs."""
    timing = interleaved(raw, plain, repeats)
    hooks = hook_seconds(plain, max(3, repeats // 3))
    return {f"{key}_ratio": round(timing["ratio"], 4),
            f"{key}_hook_ratio": round((timing["plain_s"] + hooks) / timing["plain_s"], 4),
            f"{key}_plain_ms_per_step": round(timing["plain_s"] / tokens * 1e3, 3),
            f"{key}_overhead_us_per_step": round((timing["steered_s"] - timing["plain_s"]) / tokens * 1e6, 1),
            f"{key}_hook_us_per_step": round(hooks / tokens * 1e6, 1)}


def report(title: str, results: dict[str, float], as_json: bool) -> None:
    """Print the results as one JSON object or as a table."""
    if as_json:
        print(json.dumps(results))
        return
    print(title)
    print(f"{'case':<30}{'plain ms/step':>14}{'overhead us/step':>18}{'steered/plain':>15}"
          f"{'in hooks us/step':>18}{'hook ratio':>12}")
    for key in [k[:-len("_plain_ms_per_step")] for k in results if k.endswith("_plain_ms_per_step")]:
        r = {name: results[f"{key}_{name}"] for name in
             ("plain_ms_per_step", "overhead_us_per_step", "ratio", "hook_us_per_step", "hook_ratio")}
        print(f"{key:<30}{r['plain_ms_per_step']:>14}{r['overhead_us_per_step']:>18}{r['ratio']:>15}"
              f"{r['hook_us_per_step']:>18}{r['hook_ratio']:>12}")
