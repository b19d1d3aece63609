"""Measures of generated frames, registered so ``polysteer run`` experiments and label-by-effect
(:mod:`polysteer.workflows.label_effect`) can use them."""

from __future__ import annotations

from typing import Any

import torch
from polysteer import Generation, steer

from polysteer_example.model import spectral_centroid


def centroid_shift(generation: Generation, baseline: Generation | None) -> float:
    """How far steering moved the mean spectral centroid (in bins) from the unsteered generation."""
    if baseline is None:
        raise ValueError("example_centroid_shift compares with the unsteered generation, got None")
    steered, plain = generation.outputs.float(), baseline.outputs.float()
    # a mean over frames and samples, so outputs of different lengths still compare
    return (spectral_centroid(steered).mean() - spectral_centroid(plain).mean()).item()


def centroid_effect(adapter: Any, inputs: Any, style: Any, intensity: float,
                    options: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The effect measure for label-by-effect: per sample, the mean spectral centroid (in bins) of
    the frames generated from ``inputs`` under ``style`` (``options["frames"]`` new frames, default 8)."""
    with steer(adapter, style, intensity):
        frames = adapter.generate(inputs, max_new_frames=int(options.get("frames", 8))).outputs
    return {"centroid": spectral_centroid(torch.as_tensor(frames, dtype=torch.float32))}
