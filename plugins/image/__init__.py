"""The image plugin: image statistics as measures, today; diffusers pipelines, next.

Today it registers measures of generated images (float tensors ``(B, 3, H, W)`` in [0, 1]) for
``polysteer run`` experiments: ``image_brightness`` (mean Rec. 709 luma), ``image_warmth`` (mean
red minus mean blue), ``image_saturation`` (mean HSV saturation), ``image_contrast`` (standard
deviation of luma) and ``image_distance`` (mean absolute pixel difference to the unsteered image
with the same seed). They are pure torch (:mod:`polysteer.plugins.image.measures`).

Coming: a diffusers model adapter (UNet and transformer sites in ``(B, H*W, C)`` layout, a step
clock over denoising steps, classifier-free guidance rows) and the small diffusion model polysteer
trains and ships as the default.
"""

from __future__ import annotations

from polysteer import hookimpl
from polysteer.plugins.image.measures import IMAGE_MEASURES


@hookimpl
def polysteer_register_measures(registry):
    for name, measure in IMAGE_MEASURES.items():
        registry.register(name, measure)
