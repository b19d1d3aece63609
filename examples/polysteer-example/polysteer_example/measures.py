"""Measures of generated frames, registered so ``polysteer run`` experiments can use them."""

from __future__ import annotations

from polysteer import Generation

from polysteer_example.model import spectral_centroid


def centroid_shift(generation: Generation, baseline: Generation | None) -> float:
    """How far steering moved the mean spectral centroid (in bins) from the unsteered generation."""
    if baseline is None:
        raise ValueError("example_centroid_shift compares with the unsteered generation, got None")
    steered, plain = generation.outputs.float(), baseline.outputs.float()
    # a mean over frames and samples, so outputs of different lengths still compare
    return (spectral_centroid(steered).mean() - spectral_centroid(plain).mean()).item()
