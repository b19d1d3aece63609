"""Measures of generated frames, registered so ``polysteer run`` experiments and label-by-effect
(:mod:`polysteer.label_effect`) can use them."""

from __future__ import annotations

from typing import Any

import torch
from polysteer import steer

from polysteer_example.model import spectral_centroid


def centroid_shift(adapter: Any, outputs: Any, baseline: Any) -> float:
    """How far steering moved the mean spectral centroid (in bins) from the unsteered output."""
    steered = torch.as_tensor(outputs, dtype=torch.float32)
    plain = torch.as_tensor(baseline, dtype=torch.float32)
    # a mean over frames and samples, so outputs of different lengths still compare
    return (spectral_centroid(steered).mean() - spectral_centroid(plain).mean()).item()


def centroid_effect(adapter: Any, inputs: Any, style: Any, intensity: float,
                    options: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The effect measure for label-by-effect: per sample, the mean spectral centroid (in bins) of
    the frames generated from ``inputs`` under ``style`` (``options["frames"]`` new frames, default 8)."""
    with steer(adapter, style, intensity):
        frames = adapter.generate(inputs, max_new_frames=int(options.get("frames", 8)))
    return {"centroid": spectral_centroid(torch.as_tensor(frames, dtype=torch.float32))}
