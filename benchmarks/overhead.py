"""Shared pieces of the overhead benchmarks: the three steering cases and interleaved timing.

Cases (all on random directions tied to the model, so no concept files are needed):
  one direction     - one ``add`` component;
  3-component style - three sites, with a ramp schedule and a position mask (generated-only for
                      text, a span or region for voice and images);
  reactive rule     - a rule reading a feature every step and switching a component on.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

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
    """Median times of ``plain`` and ``steered`` run alternately, and the median ratio."""
    plain(), steered()  # warm up
    p_times, s_times, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plain()
        t1 = time.perf_counter()
        steered()
        t2 = time.perf_counter()
        p_times.append(t1 - t0), s_times.append(t2 - t1), ratios.append((t2 - t1) / (t1 - t0))
    return {"plain_s": statistics.median(p_times), "steered_s": statistics.median(s_times),
            "ratio": statistics.median(ratios)}


def run_cases(adapter, styles: dict[str, ps.Style], generate: Callable[[Any], Any],
              batches: dict[int, Any], tokens: int, repeats: int) -> dict[str, float]:
    """Time every case at every batch size; keys ``<case>_batch<B>_ratio`` and per-step costs."""
    results: dict[str, float] = {}
    for batch, inputs in batches.items():
        for name, style in styles.items():
            def steered(style=style, inputs=inputs):
                with ps.steer(adapter, style, intensity=1.0):
                    generate(inputs)
            timing = interleaved(lambda inputs=inputs: generate(inputs), steered, repeats)
            key = f"{name.replace(' ', '_').replace('-', '_')}_batch{batch}"
            results[f"{key}_ratio"] = round(timing["ratio"], 4)
            results[f"{key}_plain_ms_per_step"] = round(timing["plain_s"] / tokens * 1e3, 3)
            results[f"{key}_overhead_us_per_step"] = round(
                (timing["steered_s"] - timing["plain_s"]) / tokens * 1e6, 1)
    return results


def report(title: str, results: dict[str, float], as_json: bool) -> None:
    """Print the results as one JSON object or as a table."""
    if as_json:
        print(json.dumps(results))
        return
    print(title)
    print(f"{'case':<32}{'plain ms/step':>15}{'overhead us/step':>18}{'steered/plain':>15}")
    for key in [k[:-len("_ratio")] for k in results if k.endswith("_ratio")]:
        print(f"{key:<32}{results[key + '_plain_ms_per_step']:>15}"
              f"{results[key + '_overhead_us_per_step']:>18}{results[key + '_ratio']:>15}")
