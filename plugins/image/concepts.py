"""Image concepts: directions in a denoiser's block activations, built through the core.

Three sources, each giving a one-feature :class:`~polysteer.DirectionSet` tied to the model's
fingerprint and site (so a style can add it at any intensity):

* **contrast of conditions** (:func:`condition_concept`): the same seeds drawn with and without an
  attribute (``{"glasses": "sunglasses"}`` vs ``{"glasses": "none"}``) by the avatar model; the
  difference of mean activations (or the first PCA component of the paired differences);
* **contrast of image folders** (:func:`folder_concept`): user images with vs without the concept,
  noised to the chosen denoising steps and passed through the denoiser once per step (pixel models,
  or latent models through their VAE);
* **rendered avatar pairs** (:func:`render_concept`): python-avatars faces identical except for
  one attribute, read like image folders (the cleanest contrast: nothing else differs);
* **a measured attribute** (:func:`measured_concept`): a ridge probe from activations of unconditional
  samples to a measure of the final image (brightness, warmth, saturation, contrast or the avatar
  classifier's probability of an attribute).

Activations are pooled per image: mean over the cells of the site and over the denoising steps in
``window`` (a progress range; early steps decide the layout, late ones the texture).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from polysteer import DirectionSet, steer
from polysteer.concepts import difference_of_means, direction_set, linear_probe, pca_of_differences
from polysteer.errors import ConfigError
from polysteer.schedules import mask_region

METHODS = ("mean-diff", "pca")


def _window_steps(steps: int, window: Sequence[float]) -> list[int]:
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


def pooled_activations(adapter: Any, inputs: Any, site: str, *, seed: int = 0, steps: int = 25,
                       window: Sequence[float] = (0.0, 1.0), region: Mapping[str, float] | None = None,
                       **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Generate ``inputs`` capturing ``site``: ``(pooled (B, C), images, median cell norm)``.

    Pooling is the mean over the steps in ``window`` and the cells in ``region`` (default all).
    """
    with steer(adapter, None, capture=[site]) as run:
        images = adapter.generate(inputs, seed=seed, num_inference_steps=steps, **kwargs).outputs
    acts = run.captured(site)  # (steps, B, P, C)
    chosen = acts[_window_steps(acts.shape[0], window)]
    norm = float(chosen.norm(dim=-1).median())
    cells = region_cells(chosen.shape[2], region)
    return chosen[:, :, cells].mean(dim=(0, 2)), images, norm


def _pack(vector: torch.Tensor, name: str, adapter: Any, site: str, norm: float, method: str,
          details: dict[str, Any], scale: float | None = None) -> DirectionSet:
    return direction_set([vector], [name], site=site, site_norm=norm, model=adapter.model_fingerprint,
                         method=method, scales=None if scale is None else [scale], details=details)


def condition_concept(adapter: Any, name: str, site: str, positive: Mapping[str, str],
                      negative: Mapping[str, str], *, samples: int = 32, seed: int = 0, steps: int = 25,
                      window: Sequence[float] = (0.0, 1.0), method: str = "mean-diff",
                      region: Mapping[str, float] | None = None) -> DirectionSet:
    """Contrast the avatar model drawing ``positive`` vs ``negative`` conditions from the same seeds."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r}: choose one of {METHODS}")
    pos, _, norm = pooled_activations(adapter, [dict(positive)] * samples, site, seed=seed, steps=steps,
                                      window=window, region=region)
    neg, _, _ = pooled_activations(adapter, [dict(negative)] * samples, site, seed=seed, steps=steps,
                                   window=window, region=region)
    if torch.equal(pos, neg):
        raise ConfigError(f"concept {name!r}: {dict(positive)} and {dict(negative)} give identical "
                          "activations; contrast two different conditions")
    vector = difference_of_means(pos, neg) if method == "mean-diff" else pca_of_differences(pos, neg)
    scale = float(difference_of_means(pos, neg) @ (vector / vector.norm())) if method == "pca" else None
    details = {"source": "conditions", "positive": dict(positive), "negative": dict(negative),
               "samples": samples, "seed": seed, "steps": steps, "window": list(window),
               "region": dict(region) if region else None}
    return _pack(vector, name, adapter, site, norm, method, details, scale)


def _load_folder(folder: str | os.PathLike, size: int, limit: int | None) -> torch.Tensor:
    from PIL import Image

    from polysteer.plugins.image.measures import as_images

    suffixes = (".png", ".jpg", ".jpeg", ".webp")
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)
    if not paths:
        raise ConfigError(f"{folder}: no .png/.jpg/.webp images")
    images = [Image.open(p).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
              for p in paths[:limit]]
    return as_images(images)


@torch.no_grad()
def encode_images(adapter: Any, images: torch.Tensor, site: str, *, steps: int = 25,
                  window: Sequence[float] = (0.0, 0.5), seed: int = 0,
                  region: Mapping[str, float] | None = None) -> tuple[torch.Tensor, float]:
    """Pooled ``(B, C)`` activations of real images: noised to each denoising step in ``window`` and
    passed through the denoiser once per step (the unconditional branch)."""
    pipe = adapter.pipeline
    x0 = images.float() * 2 - 1
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        x0 = vae.encode(x0).latent_dist.mean * vae.config.scaling_factor
    pipe.scheduler.set_timesteps(steps)
    timesteps = pipe.scheduler.timesteps
    g = torch.Generator().manual_seed(seed)
    pooled, norms = [], []
    for i in _window_steps(len(timesteps), window):
        t = timesteps[i]
        noisy = pipe.scheduler.add_noise(x0, torch.randn(x0.shape, generator=g), t.repeat(len(x0)))
        with steer(adapter, None, capture=[site]) as run:
            _denoise_once(adapter, noisy, t)
        acts = run.captured(site)  # one implicit step: (B, P, C)
        pooled.append(acts[:, region_cells(acts.shape[1], region)].mean(1))
        norms.append(acts.norm(dim=-1).flatten())
    return torch.stack(pooled).mean(0), float(torch.cat(norms).median())


def _denoise_once(adapter: Any, x: torch.Tensor, t: torch.Tensor) -> None:
    pipe = adapter.pipeline
    if adapter.is_avatar:
        labels = torch.zeros(len(x), len(pipe.conditioner.attributes), dtype=torch.long)
        adapter.model(x, t, class_labels=pipe.conditioner(labels))
    elif getattr(adapter.model.config, "cross_attention_dim", None):
        raise ConfigError("folder concepts for text-conditioned pipelines need prompt embeddings; "
                          "use a pixel or class-conditioned model")
    else:
        adapter.model(x, t)


def folder_concept(adapter: Any, name: str, site: str, positive: str | os.PathLike,
                   negative: str | os.PathLike, *, limit: int | None = 64, steps: int = 25,
                   window: Sequence[float] = (0.0, 0.5), seed: int = 0) -> DirectionSet:
    """Contrast two folders of images (with vs without the concept)."""
    size = adapter.model.config.sample_size
    size = size * 8 if getattr(adapter.pipeline, "vae", None) is not None else size
    pos, norm = encode_images(adapter, _load_folder(positive, size, limit), site, steps=steps,
                              window=window, seed=seed)
    neg, _ = encode_images(adapter, _load_folder(negative, size, limit), site, steps=steps,
                           window=window, seed=seed)
    details = {"source": "folders", "positive": str(positive), "negative": str(negative),
               "images": [len(pos), len(neg)], "steps": steps, "window": list(window)}
    return _pack(difference_of_means(pos, neg), name, adapter, site, norm, "mean-diff", details)


def render_concept(adapter: Any, name: str, site: str, positive: Mapping[str, str],
                   negative: Mapping[str, str], *, samples: int = 64, steps: int = 25,
                   window: Sequence[float] = (0.0, 0.5), seed: int = 0,
                   region: Mapping[str, float] | None = None) -> DirectionSet:
    """Contrast rendered avatar pairs identical except for ``positive`` vs ``negative`` labels
    (:func:`~polysteer.plugins.image.avatars.render_pairs`), read like image folders."""
    from polysteer.plugins.image.avatars import render_pairs

    size = adapter.model.config.sample_size
    pos_images, neg_images = render_pairs(samples, positive, negative, size, seed)
    common = {"steps": steps, "window": window, "seed": seed, "region": region}
    pos, norm = encode_images(adapter, pos_images.float() / 255, site, **common)
    neg, _ = encode_images(adapter, neg_images.float() / 255, site, **common)
    details = {"source": "rendered pairs", "positive": dict(positive), "negative": dict(negative),
               "samples": samples, "seed": seed, "steps": steps, "window": list(window),
               "region": dict(region) if region else None}
    return _pack(difference_of_means(pos, neg), name, adapter, site, norm, "mean-diff", details)


def per_image_measure(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images -> (B,)`` for an image statistic (``brightness``...) or ``avatar_<attr>_<value>``."""
    from polysteer.plugins.image import measures

    stats = {"brightness": measures.brightness, "warmth": measures.warmth,
             "saturation": measures.saturation, "contrast": measures.contrast}
    key = name.removeprefix("image_")
    if key in stats:
        return stats[key]
    if name.startswith("avatar_"):
        from polysteer.plugins.image.avatars import ATTRIBUTES
        from polysteer.plugins.image.classifier import shipped_classifier

        for attribute, values in ATTRIBUTES.items():
            for value in values:
                if name == f"avatar_{attribute}_{value}":
                    return lambda images, a=attribute, v=value: shipped_classifier().score(images, a, v)
    raise ConfigError(f"unknown image measure {name!r}: use brightness, warmth, saturation, contrast "
                      "or avatar_<attribute>_<value>")


def measured_concept(adapter: Any, name: str, site: str, measure: str, *, samples: int = 64,
                     seed: int = 0, steps: int = 25, window: Sequence[float] = (0.0, 1.0),
                     inputs: Any = None) -> DirectionSet:
    """A ridge probe from pooled activations of ``samples`` images to ``measure`` of each image.

    The feature's scale is the read-out gap between the images measuring in the top and bottom
    halves, so intensity 1 moves an image about that far.
    """
    acts, images, norm = pooled_activations(adapter, samples if inputs is None else inputs, site,
                                            seed=seed, steps=steps, window=window)
    values = per_image_measure(measure)(images)
    direction = linear_probe(acts, values)
    unit = direction / direction.norm()
    order = values.argsort()
    half = len(order) // 2
    scale = float((acts[order[half:]].mean(0) - acts[order[:half]].mean(0)) @ unit)
    details = {"source": "measure", "measure": measure, "samples": len(values), "seed": seed,
               "steps": steps, "window": list(window),
               "measure_mean": float(values.mean()), "measure_std": float(values.std())}
    return _pack(unit * abs(scale), name, adapter, site, norm, "probe", details, abs(scale))


@dataclass
class ImageConceptSpec:
    """An image concept spec (YAML). Exactly one source: ``positive``/``negative`` conditions,
    ``positive_folder``/``negative_folder``, or ``measure``::

        name: avatars-sunglasses
        model: avatars
        site: mid
        positive: {glasses: sunglasses}
        negative: {glasses: none}
        samples: 32
        window: [0.0, 1.0]
        intensity: 1.0          # recommended
    """

    name: str
    site: str
    model: str = "avatars"
    positive: dict[str, str] | None = None
    negative: dict[str, str] | None = None
    positive_folder: str | None = None
    negative_folder: str | None = None
    positive_render: dict[str, str] | None = None
    negative_render: dict[str, str] | None = None
    measure: str | None = None
    method: str = "mean-diff"
    samples: int = 32
    seed: int = 0
    steps: int = 25
    window: list[float] = field(default_factory=lambda: [0.0, 1.0])
    region: dict[str, float] | None = None
    intensity: float = 1.0
    description: str = ""

    @staticmethod
    def load(path: str | os.PathLike) -> ImageConceptSpec:
        """Read and validate a spec file."""
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping")
        unknown = set(data) - set(ImageConceptSpec.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
        spec = ImageConceptSpec(**data)
        sources = [spec.positive is not None, spec.positive_folder is not None,
                   spec.positive_render is not None, spec.measure is not None]
        if sum(sources) != 1:
            raise ConfigError(f"{path}: give exactly one of positive/negative, positive_folder/"
                              "negative_folder, positive_render/negative_render or measure")
        return spec


def build_image_concept(adapter: Any, spec: ImageConceptSpec) -> DirectionSet:
    """Build the dictionary a spec describes."""
    common = {"steps": spec.steps, "window": spec.window, "seed": spec.seed}
    if spec.positive is not None:
        return condition_concept(adapter, spec.name, spec.site, spec.positive, spec.negative or {},
                                 samples=spec.samples, method=spec.method, region=spec.region, **common)
    if spec.positive_render is not None:
        return render_concept(adapter, spec.name, spec.site, spec.positive_render, spec.negative_render or {},
                              samples=spec.samples, region=spec.region, **common)
    if spec.positive_folder is not None:
        return folder_concept(adapter, spec.name, spec.site, spec.positive_folder,
                              spec.negative_folder or "", limit=spec.samples, **common)
    return measured_concept(adapter, spec.name, spec.site, spec.measure, samples=spec.samples, **common)
