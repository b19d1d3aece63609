"""Site tables for diffusers denoisers (UNets and patch-token transformers).

UNets (``UNet2DModel``, ``UNet2DConditionModel`` and everything shaped like them: ``down_blocks``,
``mid_block``, ``up_blocks``), in forward order:

- ``down.N.attn.J`` / ``mid.attn.J`` / ``up.N.attn.J``: the output of attention module J of that
  block (self-attention for ``UNet2DModel``, the cross-attention ``Transformer2DModel`` for Stable
  Diffusion), already added to its input as diffusers does;
- ``down.N``: the hidden states leaving down block N (item 0 of its ``(hidden, skips)`` tuple);
- ``mid``: the output of the middle block;
- ``up.N``: the output of up block N.

Every UNet site is a ``(B, C, H, W)`` map presented as ``(B, H*W, C)`` (:class:`polysteer.BCHW`), so
region masks know the grid.

Transformers (``DiTTransformer2DModel``, PixArt, SD3, Flux...: a ``transformer_blocks`` list):
``blocks.N`` is the output of block N and ``blocks.N.attn`` that of its first attention; tokens are
already ``(B, tokens, C)``. When a block returns ``(context, image)`` (SD3/Flux joint blocks), the
image tokens (item 1) are the site. A square number of tokens is taken as a square patch grid.

:func:`site_table` walks the denoiser once (block and attention counts vary between models) and
returns the core :class:`polysteer.SiteTable`; module paths are relative to the denoiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from polysteer import BCHW, BPC, InTuple, Layout, MaybeTuple, Site, SiteTable, SteeringError


@dataclass(frozen=True)
class PatchTokens:
    """Transformer image tokens ``(B, N, C)``; ``N`` a square number is read as an ``(h, w)`` grid."""

    def read(self, native: torch.Tensor) -> torch.Tensor:
        return native

    def write(self, native: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x

    def grid(self, native: torch.Tensor) -> tuple[int, int] | None:
        side = math.isqrt(native.shape[1])
        return (side, side) if side * side == native.shape[1] else None


def denoiser_of(pipeline: Any) -> nn.Module:
    """The network called once per denoising step (``unet`` or ``transformer``)."""
    for name in ("unet", "transformer", "prior"):
        module = getattr(pipeline, name, None)
        if isinstance(module, nn.Module):
            return module
    raise SteeringError(f"{type(pipeline).__name__} has no 'unet' or 'transformer' denoiser; polysteer "
                        "steers diffusers pipelines whose denoiser is one of those")


def _channels(module: nn.Module) -> int:
    """Output channels of a block or attention module."""
    resnets = getattr(module, "resnets", None)
    if resnets is not None and len(resnets):
        return int(resnets[-1].out_channels)
    for attr in ("out_channels", "out_dim", "dim", "inner_dim"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    to_out = getattr(module, "to_out", None)
    if to_out is not None:
        return int(to_out[0].out_features)
    raise SteeringError(f"cannot tell the output channels of {type(module).__name__}")


def _unet_rows(unet: nn.Module) -> list[tuple[str, Site]]:
    rows: list[tuple[str, Site]] = []

    def attentions(prefix: str, path: str, block: nn.Module) -> None:
        for j, attn in enumerate(getattr(block, "attentions", None) or []):
            if attn is not None:
                rows.append((f"{prefix}.attn.{j}",
                             Site(f"{path}.attentions.{j}", MaybeTuple(BCHW()), _channels(attn))))

    for i, block in enumerate(unet.down_blocks):
        attentions(f"down.{i}", f"down_blocks.{i}", block)
        # a down block returns (hidden_states, skip states)
        rows.append((f"down.{i}", Site(f"down_blocks.{i}", InTuple(BCHW()), _channels(block))))
    if getattr(unet, "mid_block", None) is not None:
        attentions("mid", "mid_block", unet.mid_block)
        rows.append(("mid", Site("mid_block", BCHW(), _channels(unet.mid_block))))
    for i, block in enumerate(unet.up_blocks):
        attentions(f"up.{i}", f"up_blocks.{i}", block)
        rows.append((f"up.{i}", Site(f"up_blocks.{i}", BCHW(), _channels(block))))
    return rows


class _ImageTokens:
    """A transformer block's output: a token tensor, or ``(context, image tokens)``."""

    def read(self, native: Any) -> torch.Tensor:
        return native[1] if isinstance(native, tuple | list) else native

    def write(self, native: Any, x: torch.Tensor) -> Any:
        return InTuple(BPC(), 1).write(native, x) if isinstance(native, tuple | list) else x

    def grid(self, native: Any) -> tuple[int, int] | None:
        return PatchTokens().grid(self.read(native))


def _transformer_rows(transformer: nn.Module) -> list[tuple[str, Site]]:
    rows: list[tuple[str, Site]] = []
    layout: Layout = _ImageTokens()
    for i, block in enumerate(transformer.transformer_blocks):
        name = "attn1" if getattr(block, "attn1", None) is not None else "attn"
        attn = getattr(block, name, None)
        if attn is not None:
            rows.append((f"blocks.{i}.attn", Site(f"transformer_blocks.{i}.{name}",
                                                  MaybeTuple(PatchTokens()), _channels(attn))))
        rows.append((f"blocks.{i}", Site(f"transformer_blocks.{i}", layout, _norm_width(block))))
    return rows


def _norm_width(block: nn.Module) -> int:
    for attr in ("dim", "inner_dim"):
        if isinstance(getattr(block, attr, None), int):
            return getattr(block, attr)
    attn = getattr(block, "attn1", None) or block.attn
    return int(attn.to_out[0].out_features)


def site_table(denoiser: nn.Module, name: str = "this denoiser") -> SiteTable:
    """Every site of ``denoiser`` in forward order; paths are relative to the denoiser."""
    if hasattr(denoiser, "down_blocks") and hasattr(denoiser, "up_blocks"):
        return SiteTable(_unet_rows(denoiser), owner=name)
    if hasattr(denoiser, "transformer_blocks"):
        return SiteTable(_transformer_rows(denoiser), owner=name)
    raise SteeringError(f"{type(denoiser).__name__} is neither a UNet (down_blocks/up_blocks) nor a "
                        "transformer (transformer_blocks); no site table for it")
