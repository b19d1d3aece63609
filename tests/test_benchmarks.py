"""The overhead benchmarks' shared timing: they run, and their hook timing counts what hooks cost."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from overhead import timed_hooks  # noqa: E402


def test_timed_hooks_count_time_spent_in_hooks_registered_inside_only():
    model, register = nn.Linear(4, 4), nn.Module.register_forward_hook
    outside = model.register_forward_hook(lambda *_: time.sleep(0.05))
    with timed_hooks() as spent:
        inside = model.register_forward_pre_hook(lambda *_: time.sleep(0.02))
        model(torch.zeros(1, 4))
    outside.remove(), inside.remove()
    assert 0.02 <= spent[0] < 0.05  # the pre-hook registered inside, not the hook from before
    assert nn.Module.register_forward_hook is register  # restored on leaving


def test_runtime_benchmark_prints_end_to_end_and_hook_ratios():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "runtime_overhead.py"), "--d-model", "32",
                          "--layers", "3", "--tokens", "4", "--batch", "1", "--repeats", "1", "--json"],
                         capture_output=True, text=True, check=True).stdout
    figures = json.loads(out)
    for case in ("one_direction", "3_component_style", "reactive_rule"):
        assert figures[f"{case}_batch1_ratio"] > 0
        assert figures[f"{case}_batch1_hook_ratio"] > 1.0  # steering runs hooks, and they take time


def test_serve_load_benchmark_counts_no_crosstalk_on_the_tiny_model(tmp_path):
    out = subprocess.run([sys.executable, str(BENCHMARKS / "serve_load.py"), "--model", "tiny",
                          "--clients", "3", "--rounds", "1", "--tokens", "3", "--repeats", "1",
                          "--json"], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
    figures = json.loads(out)
    assert figures["crosstalk"] == 0
    assert figures["distinct_steered_answers"] == 3
    assert 1 <= figures["steered_mean_batch"] <= 3
    assert figures["steered_unsteered_throughput_ratio"] > 0 and figures["batching_throughput_ratio"] > 0
