"""The image plugin's parts of the core harvest: how images are made or read, which rows are kept.

Renderers (hook ``polysteer_register_renderers``):

* ``image`` (:class:`ImageRenderer`): generates a batch (a list of avatar conditions, ``{}`` for
  unconditional; ``None`` entries ask a pipeline for that many unconditional samples) with a
  seed and a number of denoising steps; the images are ``rendered.outputs``;
* ``image-noised`` (:class:`NoisedImageRenderer`): reads real images (``(3, H, W)`` in [0, 1]):
  noised to each denoising step in a ``window`` and passed through the denoiser once per step
  (the unconditional branch; latent pipelines through their VAE).

Row selectors (hook ``polysteer_register_row_selectors``):

* ``image-pooled`` (:func:`image_pooled`): one row per image, the mean over the cells in
  ``region`` and the denoising steps in ``window``; the site norm reads every cell of those steps;
* ``image-cells`` (:func:`image_cells`): every cell of the steps nearest the progress points
  ``at``, as SAE training rows.

Measured attribute ``image-measure`` (hook ``polysteer_register_attributes``): an image statistic
(``brightness``, ``warmth``, ``saturation``, ``contrast``) or the shipped classifier's probability
``avatar_<attribute>_<value>`` of each generated image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from polysteer.errors import ConfigError
from polysteer.steering import mask_region
from polysteer.workflows import Attribute, Rendered, Rows, RowSelector


def window_steps(steps: int, window: Sequence[float]) -> list[int]:
    """The denoising steps (of ``steps``) whose progress lies in ``window``."""
    lo, hi = float(window[0]), float(window[1])
    chosen = [i for i in range(steps) if lo <= (i / max(steps - 1, 1)) <= hi]
    if not chosen:
        raise ConfigError(f"window {list(window)} selects none of {steps} denoising steps")
    return chosen


def region_cells(positions: int, region: Mapping[str, float] | None) -> torch.Tensor:
    """Boolean ``(positions,)``: the cells of a square site inside ``region`` (fractions, as the
    ``region`` position mask reads them); all cells when ``region`` is None."""
    if region is None:
        return torch.ones(positions, dtype=torch.bool)
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConfigError(f"a region needs a square site grid, got {positions} positions")
    return mask_region(**region)(None, positions, (side, side), torch.device("cpu"))


class ImageRenderer:
    """Renderer ``image``: generate the batch with ``steps`` denoising steps from ``seed``
    (plus ``seed_step`` per batch already rendered, so batches get different noise)."""

    stop_early = False

    def __init__(self, seed: int = 0, steps: int = 25, seed_step: int = 0, **generate: Any):
        self.seed, self.steps, self.seed_step, self.generate = seed, steps, seed_step, generate
        self.batches = 0

    def render(self, adapter: Any, rendered: Rendered) -> None:
        batch = list(rendered.inputs)
        inputs: Any = len(batch) if all(x is None for x in batch) else [dict(x or {}) for x in batch]
        seed = self.seed + self.seed_step * self.batches
        self.batches += 1
        rendered.info.update(seed=seed, steps=self.steps)
        rendered.outputs = adapter.generate(inputs, seed=seed, num_inference_steps=self.steps,
                                            **self.generate).outputs


class NoisedImageRenderer:
    """Renderer ``image-noised``: real images noised to each step of ``steps`` in ``window`` and
    denoised once per step (one pass each: the captured activation is ``(passes, B, P, C)``)."""

    stop_early = False

    def __init__(self, steps: int = 25, window: Sequence[float] = (0.0, 0.5), seed: int = 0):
        self.steps, self.window, self.seed = steps, tuple(window), seed

    @torch.no_grad()
    def render(self, adapter: Any, rendered: Rendered) -> None:
        pipe = adapter.pipeline
        images = torch.stack([torch.as_tensor(x) for x in rendered.inputs])
        x0 = images.float() * 2 - 1
        vae = getattr(pipe, "vae", None)
        if vae is not None:
            x0 = vae.encode(x0).latent_dist.mean * vae.config.scaling_factor
        pipe.scheduler.set_timesteps(self.steps)
        timesteps = pipe.scheduler.timesteps
        g = torch.Generator().manual_seed(self.seed)
        for i in window_steps(len(timesteps), self.window):
            t = timesteps[i]
            noisy = pipe.scheduler.add_noise(x0, torch.randn(x0.shape, generator=g), t.repeat(len(x0)))
            denoise_once(adapter, noisy, t)


def denoise_once(adapter: Any, x: torch.Tensor, t: torch.Tensor) -> None:
    """One unconditional pass of the denoiser on ``x`` at timestep ``t``."""
    pipe = adapter.pipeline
    if adapter.is_avatar:
        labels = torch.zeros(len(x), len(pipe.conditioner.attributes), dtype=torch.long)
        adapter.model(x, t, class_labels=pipe.conditioner(labels))
    elif getattr(adapter.model.config, "cross_attention_dim", None):
        raise ConfigError("folder concepts for text-conditioned pipelines need prompt embeddings; "
                          "use a pixel or class-conditioned model")
    else:
        adapter.model(x, t)


def _steps_first(acts: torch.Tensor) -> torch.Tensor:
    return acts if acts.ndim == 4 else acts.unsqueeze(0)  # a single pass: one step


def image_pooled(window: Sequence[float] = (0.0, 1.0),
                 region: Mapping[str, float] | None = None) -> RowSelector:
    """Row selector ``image-pooled``: per image, the mean over the steps in ``window`` and the
    cells in ``region`` (default all); norms of every cell of those steps."""
    def select(acts: torch.Tensor, _rendered: Rendered) -> Rows:
        acts = _steps_first(acts)
        chosen = acts[window_steps(acts.shape[0], window)]
        cells = region_cells(chosen.shape[2], region)
        pooled = chosen[:, :, cells].mean(dim=(0, 2))
        return Rows(pooled, torch.arange(len(pooled)), norms=chosen.norm(dim=-1).reshape(-1))
    return select


def image_cells(at: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> RowSelector:
    """Row selector ``image-cells``: every cell of the denoising steps nearest the progress
    points ``at``, image by image (rows of image ``b``: its steps in order, each its cells)."""
    def select(acts: torch.Tensor, _rendered: Rendered) -> Rows:
        acts = _steps_first(acts)
        chosen = sorted({round(p * (acts.shape[0] - 1)) for p in at})
        per_image = acts[chosen].transpose(0, 1)  # (B, S, P, C)
        b, s, p, c = per_image.shape
        return Rows(per_image.reshape(-1, c), torch.arange(b).repeat_interleave(s * p),
                    values={"step": torch.tensor(chosen).repeat_interleave(p).repeat(b).float()})
    return select


def image_measure(measure: str) -> Attribute:
    """Measured attribute ``image-measure``: ``measure`` of the image each row came from."""
    from polysteer.plugins.image.concepts import per_image_measure

    fn = per_image_measure(measure)

    def attribute(rendered: Rendered, rows: Rows) -> torch.Tensor:
        if rendered.outputs is None:
            raise ValueError("image-measure needs generated images (renderer 'image')")
        return fn(rendered.outputs)[rows.example]
    return attribute
