"""Tiny random diffusers pipelines for fast tests (milliseconds per denoising step, no downloads).

* :func:`tiny_unet2d_pipeline`: ``DDIMPipeline`` over an unconditional ``UNet2DModel`` (attention in
  the second block), 16 x 16 pixels.
* :func:`tiny_sd_pipeline`: ``StableDiffusionPipeline`` over a ``UNet2DConditionModel`` with
  cross-attention and a tiny ``AutoencoderKL``; no tokenizer or text encoder: pass
  ``prompt_embeds`` (see :func:`tiny_prompt_embeds`).
* :func:`tiny_dit_pipeline`: ``DiTPipeline`` over a ``DiTTransformer2DModel`` (patch tokens).
* :func:`tiny_avatar_pipeline`: the shipped avatar architecture, shrunk, with random weights.
"""

from __future__ import annotations

from typing import Any

import torch

CROSS_DIM = 16


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def tiny_unet2d_pipeline(seed: int = 0) -> Any:
    """An unconditional DDIM pipeline with a two-level UNet2DModel (random weights)."""
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    _seeded(seed)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       attention_head_dim=8).eval()
    return DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100))


def tiny_sd_pipeline(seed: int = 0) -> Any:
    """A Stable-Diffusion-family pipeline (UNet2DConditionModel + VAE), no tokenizer or text encoder."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    _seeded(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=CROSS_DIM, norm_num_groups=8, attention_head_dim=8).eval()
    vae = _tiny_vae()
    scheduler = DDIMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", clip_sample=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=16).eval()


def tiny_prompt_embeds(batch: int = 2, tokens: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random ``prompt_embeds`` and ``negative_prompt_embeds`` for :func:`tiny_sd_pipeline`."""
    g = torch.Generator().manual_seed(seed)
    return {"prompt_embeds": torch.randn(batch, tokens, CROSS_DIM, generator=g),
            "negative_prompt_embeds": torch.zeros(batch, tokens, CROSS_DIM)}


def tiny_dit_pipeline(seed: int = 0) -> Any:
    """A class-conditional DiT pipeline (patch-token transformer denoiser, tiny VAE)."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    _seeded(seed)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                        out_channels=8, num_layers=2, sample_size=8, patch_size=2,
                                        num_embeds_ada_norm=1000, norm_num_groups=8).eval()
    vae = _tiny_vae()
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_avatar_pipeline(seed: int = 0) -> Any:
    """The avatar architecture (attribute conditioner, class-embedded UNet2DModel), tiny and random."""
    from diffusers import DDIMScheduler, UNet2DModel

    from polysteer.plugins.image.avatars import AttributeConditioner, AvatarPipeline, scheduler_config

    _seeded(seed)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       attention_head_dim=8, class_embed_type="identity").eval()
    conditioner = AttributeConditioner(64).eval()
    for table in conditioner.tables.values():  # random tables, large enough that conditions matter
        torch.nn.init.normal_(table.weight, std=1.0)
    return AvatarPipeline(unet, conditioner, DDIMScheduler(**scheduler_config()))
