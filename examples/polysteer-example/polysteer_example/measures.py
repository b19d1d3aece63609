"""Measures of generated frames, registered so ``polysteer run`` experiments can use them."""

from __future__ import annotations

from typing import Any

import torch

from polysteer_example.model import spectral_centroid


def centroid_shift(adapter: Any, outputs: Any, baseline: Any) -> float:
    """How far steering moved the mean spectral centroid (in bins) from the unsteered output."""
    steered = torch.as_tensor(outputs, dtype=torch.float32)
    plain = torch.as_tensor(baseline, dtype=torch.float32)
    # a mean over frames and samples, so outputs of different lengths still compare
    return (spectral_centroid(steered).mean() - spectral_centroid(plain).mean()).item()
