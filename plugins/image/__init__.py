"""The image plugin: diffusers pipelines steered per denoising step, and image measures.

Registers the ``diffusers`` model adapter (``model: {kind: diffusers, name: avatars}``): the shipped
``avatars`` model (a 4.5M-parameter attribute-conditioned UNet2DModel polysteer trains on cartoon
faces, see ``docs/image.md``) or any local diffusers pipeline folder (UNet2D, Stable Diffusion
family, DiT/transformer denoisers). Sites are ``down.N``, ``mid``, ``up.N`` (and ``.attn.J``) for UNets
and ``blocks.N`` for transformers, all ``(B, H*W, C)``; the step clock follows the denoising steps.

Measures of generated images (float tensors ``(B, 3, H, W)`` in [0, 1]): ``image_brightness``,
``image_warmth``, ``image_saturation``, ``image_contrast`` and ``image_distance`` (pure torch,
:mod:`polysteer.plugins.image.measures`). The CLI command ``polysteer draw`` renders a style.
Everything that imports diffusers is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polysteer import Requirement, hookimpl
from polysteer.plugins.image.measures import IMAGE_MEASURES

IMAGE_EXTRA = "pip install 'polysteer[image]'"
REQUIRES = [Requirement("diffusers", IMAGE_EXTRA), Requirement("PIL", IMAGE_EXTRA)]


@dataclass
class DiffusersModelConfig:
    """Config node ``model`` for ``kind: diffusers``."""

    kind: str = "diffusers"
    name: str = "avatars"  # a shipped name or a local diffusers pipeline folder
    dtype: str | None = None  # None: --dtype / POLYSTEER_DTYPE, else float32
    device: str | None = None  # None: --device / POLYSTEER_DEVICE, else cpu


def load_diffusers(node: dict[str, Any]):
    """A diffusers pipeline: the shipped ``avatars`` or a local pipeline folder."""
    from polysteer.plugins.image.adapter import DiffusersAdapter

    return DiffusersAdapter.load(node.get("name", "avatars"), node.get("dtype") or "float32",
                                 node.get("device") or "cpu")

SHIPPED = Path(__file__).parent / "shipped"
"""Files this plugin ships: the avatars model, its attribute classifier and its dictionaries."""


@hookimpl
def polysteer_register_shipped_folders(registry):
    registry.register("image", SHIPPED,
                      description="the avatars model, its attribute classifier and its dictionaries")


@hookimpl
def polysteer_register_measures(registry):
    from polysteer.plugins.image.classifier import classifier_measures

    for name, measure in {**IMAGE_MEASURES, **classifier_measures()}.items():
        registry.register(name, measure)


@hookimpl
def polysteer_register_adapters(registry):
    registry.register("diffusers", load_diffusers, requires=REQUIRES)


@hookimpl
def polysteer_register_config_schemas(registry):
    registry.register("model.diffusers", DiffusersModelConfig)


@hookimpl
def polysteer_register_renderers(registry):
    from polysteer.plugins.image.harvest import ImageRenderer, NoisedImageRenderer

    registry.register("image", ImageRenderer, requires=REQUIRES)
    registry.register("image-noised", NoisedImageRenderer, requires=REQUIRES)


@hookimpl
def polysteer_register_row_selectors(registry):
    from polysteer.plugins.image.harvest import image_cells, image_pooled

    registry.register("image-pooled", image_pooled)
    registry.register("image-cells", image_cells)


@hookimpl
def polysteer_register_attributes(registry):
    from polysteer.plugins.image.harvest import image_measure

    registry.register("image-measure", image_measure)


@hookimpl
def polysteer_register_commands(registry):
    from polysteer.plugins.image.commands import IMAGE_COMMANDS

    for name, command in IMAGE_COMMANDS.items():
        registry.register(name, command, requires=REQUIRES)


@hookimpl
def polysteer_register_generate_extensions(registry):
    from polysteer.plugins.image.commands import IMAGE_GENERATION

    registry.register("diffusers", IMAGE_GENERATION, requires=REQUIRES)


@hookimpl
def polysteer_register_artifacts(registry):
    from polysteer.plugins.image.models import artifacts

    for item in artifacts():  # avatars (shipped inside the package)
        registry.register(item.name, item, description=item.description)


@hookimpl
def polysteer_register_effect_measures(registry):
    from polysteer.plugins.image.sae import image_effect

    effect = image_effect()  # the avatar classifier's probabilities and the image statistics
    registry.register("image-avatar", effect, description=effect.description, requires=REQUIRES)


@hookimpl
def polysteer_register_calibration_judges(registry):
    from polysteer.plugins.image.evaluation import ImageCalibrationJudge

    registry.register("image", ImageCalibrationJudge.from_spec,
                      description="polysteer calibrate on image models")
