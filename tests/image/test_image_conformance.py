"""The conformance suite on tiny random UNet2D, Stable Diffusion (UNet2DCondition), DiT and avatar
pipelines, plus the image-specific contracts: step from the timestep, CFG rows, region masks."""

import pytest

pytest.importorskip("diffusers")

from polysteer.plugins.image.adapter import DiffusersAdapter  # noqa: E402
from polysteer.plugins.image.testing import (  # noqa: E402
    tiny_avatar_pipeline,
    tiny_dit_pipeline,
    tiny_prompt_embeds,
    tiny_sd_pipeline,
    tiny_unet2d_pipeline,
)
from polysteer.testing import AdapterConformance  # noqa: E402


class TestTinyUNet2D(AdapterConformance):
    generate_kwargs = {"num_inference_steps": 4}

    def make_adapter(self):
        return DiffusersAdapter(tiny_unet2d_pipeline(), "tiny-unet2d")

    def make_inputs(self):
        return 2


class TestTinyStableDiffusion(AdapterConformance):
    generate_kwargs = {"num_inference_steps": 4, "height": 16, "width": 16, "guidance_scale": 1.0}
    cfg_kwargs = {"guidance_scale": 3.0}
    strong_intensity = 8.0

    def make_adapter(self):
        return DiffusersAdapter(tiny_sd_pipeline(), "tiny-sd")

    def make_inputs(self):
        return tiny_prompt_embeds(2)


class TestTinyDiT(AdapterConformance):
    generate_kwargs = {"num_inference_steps": 4, "guidance_scale": 1.0}
    cfg_kwargs = {"guidance_scale": 3.0}
    strong_intensity = 8.0

    def make_adapter(self):
        return DiffusersAdapter(tiny_dit_pipeline(), "tiny-dit")

    def make_inputs(self):
        return {"class_labels": [1, 2]}


class TestTinyAvatar(AdapterConformance):
    generate_kwargs = {"num_inference_steps": 4}
    cfg_kwargs = {"guidance_scale": 3.0}

    def make_adapter(self):
        return DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar")

    def make_inputs(self):
        return [{"glasses": "sunglasses"}, {"mouth": "smile", "background": "orange"}]
