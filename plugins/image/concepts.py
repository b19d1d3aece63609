"""Image concepts: directions in a denoiser's block activations, built through the core.

Every source is a :class:`~polysteer.workflows.ConceptRecipe` for the core concept builder
(:func:`polysteer.workflows.build_concept`) with the image plugin's renderers (``image``,
``image-noised``), row selector ``image-pooled`` and measured attribute ``image-measure`` (see
:mod:`polysteer.plugins.image.harvest`). Four sources, each giving a one-feature
:class:`~polysteer.DirectionSet` tied to the model's fingerprint and site (so a style can add it
at any intensity):

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

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from polysteer import DirectionSet
from polysteer.errors import ConfigError
from polysteer.io import finite, load_yaml
from polysteer.plugins.image.harvest import region_cells
from polysteer.workflows import ConceptRecipe, build_concept

__all__ = ["METHODS", "ImageConceptSpec", "build_image_concept", "condition_concept", "folder_concept",
           "measured_concept", "per_image_measure", "region_cells", "render_concept"]

METHODS = ("mean-diff", "pca")


def _build(adapter: Any, recipe: ConceptRecipe) -> DirectionSet:
    """The core builder, its complaints about the inputs as :class:`ConfigError`."""
    try:
        return build_concept(adapter, recipe)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _region(region: Mapping[str, float] | None) -> dict[str, float] | None:
    return dict(region) if region else None


def condition_concept(adapter: Any, name: str, site: str, positive: Mapping[str, str],
                      negative: Mapping[str, str], *, samples: int = 32, seed: int = 0, steps: int = 25,
                      window: Sequence[float] = (0.0, 1.0), method: str = "mean-diff",
                      region: Mapping[str, float] | None = None) -> DirectionSet:
    """Contrast the avatar model drawing ``positive`` vs ``negative`` conditions from the same seeds.

    The core builder with renderer ``image`` and selector ``image-pooled``; the site norm is the
    median cell norm of the positive draws, a ``pca`` feature's scale the mean difference's
    projection on it.
    """
    if method not in METHODS:
        raise ConfigError(f"method {method!r}: choose one of {METHODS}")
    details = {"source": "conditions", "positive": dict(positive), "negative": dict(negative),
               "samples": samples, "seed": seed, "steps": steps, "window": list(window),
               "region": _region(region)}
    return _build(adapter, ConceptRecipe(
        name=name, site=site, renderer="image", rows="image-pooled", method=method,
        positive=[dict(positive)] * samples, negative=[dict(negative)] * samples, batch_size=samples,
        renderer_options={"seed": seed, "steps": steps},
        rows_options={"window": tuple(window), "region": _region(region)},
        scale="projection", norm_from="positive", details=details))


def _image_contrast(adapter: Any, name: str, site: str, positive: torch.Tensor, negative: torch.Tensor,
                    *, steps: int, window: Sequence[float], seed: int,
                    region: Mapping[str, float] | None, details: dict[str, Any]) -> DirectionSet:
    """Contrast two sets of real images read by renderer ``image-noised`` (one batch each)."""
    return _build(adapter, ConceptRecipe(
        name=name, site=site, renderer="image-noised", rows="image-pooled", method="mean-diff",
        positive=list(positive), negative=list(negative), batch_size=max(len(positive), len(negative)),
        renderer_options={"steps": steps, "window": tuple(window), "seed": seed},
        rows_options={"region": _region(region)}, norm_from="positive", details=details))


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


def folder_concept(adapter: Any, name: str, site: str, positive: str | os.PathLike,
                   negative: str | os.PathLike, *, limit: int | None = 64, steps: int = 25,
                   window: Sequence[float] = (0.0, 0.5), seed: int = 0) -> DirectionSet:
    """Contrast two folders of images (with vs without the concept)."""
    size = adapter.model.config.sample_size
    size = size * 8 if getattr(adapter.pipeline, "vae", None) is not None else size
    pos, neg = _load_folder(positive, size, limit), _load_folder(negative, size, limit)
    details = {"source": "folders", "positive": str(positive), "negative": str(negative),
               "images": [len(pos), len(neg)], "steps": steps, "window": list(window)}
    return _image_contrast(adapter, name, site, pos, neg, steps=steps, window=window, seed=seed,
                           region=None, details=details)


def render_concept(adapter: Any, name: str, site: str, positive: Mapping[str, str],
                   negative: Mapping[str, str], *, samples: int = 64, steps: int = 25,
                   window: Sequence[float] = (0.0, 0.5), seed: int = 0,
                   region: Mapping[str, float] | None = None) -> DirectionSet:
    """Contrast rendered avatar pairs identical except for ``positive`` vs ``negative`` labels
    (:func:`~polysteer.plugins.image.avatars.render_pairs`), read like image folders."""
    from polysteer.plugins.image.avatars import render_pairs

    size = adapter.model.config.sample_size
    pos_images, neg_images = render_pairs(samples, positive, negative, size, seed)
    details = {"source": "rendered pairs", "positive": dict(positive), "negative": dict(negative),
               "samples": samples, "seed": seed, "steps": steps, "window": list(window),
               "region": _region(region)}
    return _image_contrast(adapter, name, site, pos_images.float() / 255, neg_images.float() / 255,
                           steps=steps, window=window, seed=seed, region=region, details=details)


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

    The core builder with renderer ``image``, selector ``image-pooled`` and attribute
    ``image-measure``. The feature's scale is the read-out gap between the images measuring in
    the top and bottom halves, so intensity 1 moves an image about that far. ``inputs`` (a count
    or a list of avatar conditions) replaces the ``samples`` unconditional draws.
    """
    if inputs is None or isinstance(inputs, int):
        examples: list[Any] = [None] * (samples if inputs is None else inputs)
    else:
        examples = list(inputs)
    details = {"source": "measure", "measure": measure, "samples": len(examples), "seed": seed,
               "steps": steps, "window": list(window)}
    return _build(adapter, ConceptRecipe(
        name=name, site=site, renderer="image", rows="image-pooled", method="probe",
        examples=examples, attribute="image-measure", attribute_options={"measure": measure},
        batch_size=len(examples), renderer_options={"seed": seed, "steps": steps},
        rows_options={"window": tuple(window)}, scale="projection", details=details))


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
        data = load_yaml(path, "concept spec")  # regular UTF-8 file, alias/depth limits
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping")
        unknown = set(data) - set(ImageConceptSpec.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
        for key in ("name", "site"):
            if key not in data:
                raise ConfigError(f"{path}: {key}: missing (required)")
        _check_spec_types(data, path)
        spec = ImageConceptSpec(**data)
        sources = [spec.positive is not None, spec.positive_folder is not None,
                   spec.positive_render is not None, spec.measure is not None]
        if sum(sources) != 1:
            raise ConfigError(f"{path}: give exactly one of positive/negative, positive_folder/"
                              "negative_folder, positive_render/negative_render or measure")
        return spec


def _check_spec_types(data: dict[str, Any], path: Any) -> None:
    """Each key of an image concept spec has the type the builders expect (checked at load)."""
    texts = ("name", "site", "model", "positive_folder", "negative_folder", "measure", "method",
             "description")
    for key, value in data.items():
        where = f"{path}: {key}"
        if key in texts:
            if not isinstance(value, str) and not (value is None and key not in ("name", "site")):
                raise ConfigError(f"{where}: expected text, got {value!r}")
        elif key in ("samples", "seed", "steps"):
            finite(value, where, low=0 if key == "seed" else 1, high=100_000, integer=True)
        elif key == "intensity":
            finite(value, where, low=-1000.0, high=1000.0)
        elif key == "window":
            if not (isinstance(value, list) and len(value) == 2):
                raise ConfigError(f"{where}: expected [start, end] fractions")
            for i, v in enumerate(value):
                finite(v, f"{where}[{i}]", low=0.0, high=1.0)
        elif key == "region" and value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of top/bottom/left/right fractions")
            for k, v in value.items():
                finite(v, f"{where}.{k}", low=0.0, high=1.0)
        elif value is not None:  # positive/negative(_render): attribute -> value
            if not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in value.items())):
                raise ConfigError(f"{where}: expected a mapping of attribute -> value (text)")


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
