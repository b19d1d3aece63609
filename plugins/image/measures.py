"""Image measures: brightness, warmth, saturation, contrast and distance to the unsteered image.

Pure torch. Images are float tensors ``(B, 3, H, W)`` in [0, 1] (gamma-encoded sRGB, as decoded
by a pipeline); :func:`as_images` also takes ``(3, H, W)``, one-channel (grey) images, ``uint8``
tensors (divided by 255), NumPy arrays laid out like tensors (channels first), PIL images and
lists of any of these (same size). Every statistic returns one value per image, ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from polysteer import Generation

REC709 = (0.2126, 0.7152, 0.0722)
"""Rec. 709 luma weights for R, G, B (applied to the encoded values, no linearisation)."""

_TOLERANCE = 1e-3  # float images may overshoot [0, 1] by rounding


def _is_pil(x: Any) -> bool:
    return type(x).__module__.startswith("PIL.")


def _from_pil(image: Any) -> torch.Tensor:
    """A PIL image as ``(3, H, W)`` uint8 (converted to RGB; alpha is dropped)."""
    rgb = image.convert("RGB")
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1)


def as_images(images: Any) -> torch.Tensor:
    """``(B, 3, H, W)`` float32 in [0, 1] from any accepted input (see the module docstring).

    ``uint8`` is divided by 255; float must already be in [0, 1] (an image in [-1, 1] is an error
    naming the fix, not silently misread); one channel is repeated to three.
    """
    if _is_pil(images):
        images = _from_pil(images)
    elif isinstance(images, Sequence) and not isinstance(images, str | bytes):
        if not images:
            raise ValueError("no images: got an empty list")
        parts = [as_images(i) for i in images]
        sizes = {tuple(p.shape[-2:]) for p in parts}
        if len(sizes) > 1:
            raise ValueError(f"images in a list must share one size (H, W), got {sorted(sizes)}")
        return torch.cat(parts)
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
        lo, hi = (x.min().item(), x.max().item()) if x.numel() else (0.0, 0.0)
        if lo < -_TOLERANCE or hi > 1 + _TOLERANCE:
            raise ValueError(f"float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                             "an image in [-1, 1] needs (x + 1) / 2, one in [0, 255] needs x / 255")
        x = x.clamp(0, 1)
    else:
        raise TypeError(f"images must be float in [0, 1] or uint8, got dtype {x.dtype}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3) or 0 in x.shape:
        raise ValueError(f"expected images (B, 3, H, W) or (3, H, W), channels first, got shape "
                         f"{tuple(x.shape)}; channel-last (B, H, W, 3) needs .permute(0, 3, 1, 2)")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def luma(images: Any) -> torch.Tensor:
    """Rec. 709 luma per pixel, ``(B, H, W)`` in [0, 1]."""
    x = as_images(images)
    weights = torch.tensor(REC709, dtype=x.dtype, device=x.device)
    return torch.einsum("bchw,c->bhw", x, weights)


def brightness(images: Any) -> torch.Tensor:
    """Mean Rec. 709 luma per image, ``(B,)`` in [0, 1] (0 black, 1 white)."""
    return luma(images).mean((-2, -1))


def warmth(images: Any) -> torch.Tensor:
    """Mean red minus mean blue per image, ``(B,)`` in [-1, 1] (positive is warm)."""
    x = as_images(images)
    return (x[:, 0] - x[:, 2]).mean((-2, -1))


def saturation(images: Any) -> torch.Tensor:
    """Mean HSV saturation ``(max - min) / max`` per image, ``(B,)`` in [0, 1] (0 for black/grey)."""
    x = as_images(images)
    top, bottom = x.amax(1), x.amin(1)
    sat = torch.where(top > 0, (top - bottom) / top.clamp_min(1e-12), torch.zeros_like(top))
    return sat.mean((-2, -1))


def contrast(images: Any) -> torch.Tensor:
    """Standard deviation of Rec. 709 luma per image, ``(B,)`` in [0, 0.5] (RMS contrast)."""
    return luma(images).flatten(1).std(-1, correction=0)


def distance_to_baseline(images: Any, baseline: Any) -> torch.Tensor:
    """Mean absolute pixel difference to the unsteered image (same seed), ``(B,)`` in [0, 1]."""
    x, y = as_images(images), as_images(baseline)
    if x.shape != y.shape:
        raise ValueError(f"images {tuple(x.shape)} and baseline {tuple(y.shape)} differ in shape; "
                         "generate the baseline with the same batch, size and seed")
    return (x - y).abs().mean((1, 2, 3))


# -- registered measures: (generation, baseline) -> float -------------------------------------
def image_brightness(generation: Generation, baseline: Generation | None = None) -> float:
    """Mean Rec. 709 luma in [0, 1] (mean over the batch)."""
    return brightness(generation.outputs).mean().item()


def image_warmth(generation: Generation, baseline: Generation | None = None) -> float:
    """Mean red minus mean blue in [-1, 1], positive is warm (mean over the batch)."""
    return warmth(generation.outputs).mean().item()


def image_saturation(generation: Generation, baseline: Generation | None = None) -> float:
    """Mean HSV saturation in [0, 1] (mean over the batch)."""
    return saturation(generation.outputs).mean().item()


def image_contrast(generation: Generation, baseline: Generation | None = None) -> float:
    """Standard deviation of Rec. 709 luma in [0, 0.5] (mean over the batch)."""
    return contrast(generation.outputs).mean().item()


def image_distance(generation: Generation, baseline: Generation | None) -> float:
    """Mean absolute pixel difference to the unsteered images, in [0, 1] (mean over the batch)."""
    if baseline is None:
        raise ValueError("image_distance needs the unsteered images (baseline), got None")
    return distance_to_baseline(generation.outputs, baseline.outputs).mean().item()


IMAGE_MEASURES = {
    "image_brightness": image_brightness,
    "image_warmth": image_warmth,
    "image_saturation": image_saturation,
    "image_contrast": image_contrast,
    "image_distance": image_distance,
}
"""The measures the image plugin registers, by name."""
