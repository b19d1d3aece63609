"""Site names for diffusers denoisers (UNets and patch-token transformers), bound to modules.

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
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from polysteer.adapter import SiteBinding
from polysteer.errors import SteeringError
from polysteer.layout import BCHW, BPC, InTuple, Layout, MaybeTuple


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


def _unet_table(unet: nn.Module) -> dict[str, SiteBinding]:
    table: dict[str, SiteBinding] = {}

    def attentions(prefix: str, block: nn.Module) -> None:
        for j, attn in enumerate(getattr(block, "attentions", None) or []):
            if attn is not None:
                table[f"{prefix}.attn.{j}"] = SiteBinding(attn, MaybeTuple(BCHW()), _channels(attn))

    for i, block in enumerate(unet.down_blocks):
        attentions(f"down.{i}", block)
        table[f"down.{i}"] = SiteBinding(block, InTuple(BCHW()), _channels(block))
    if getattr(unet, "mid_block", None) is not None:
        attentions("mid", unet.mid_block)
        table["mid"] = SiteBinding(unet.mid_block, BCHW(), _channels(unet.mid_block))
    for i, block in enumerate(unet.up_blocks):
        attentions(f"up.{i}", block)
        table[f"up.{i}"] = SiteBinding(block, BCHW(), _channels(block))
    return table


class _ImageTokens:
    """A transformer block's output: a token tensor, or ``(context, image tokens)``."""

    def read(self, native: Any) -> torch.Tensor:
        return native[1] if isinstance(native, tuple | list) else native

    def write(self, native: Any, x: torch.Tensor) -> Any:
        return InTuple(BPC(), 1).write(native, x) if isinstance(native, tuple | list) else x

    def grid(self, native: Any) -> tuple[int, int] | None:
        return PatchTokens().grid(self.read(native))


def _transformer_table(transformer: nn.Module) -> dict[str, SiteBinding]:
    table: dict[str, SiteBinding] = {}
    layout: Layout = _ImageTokens()
    for i, block in enumerate(transformer.transformer_blocks):
        attn = getattr(block, "attn1", None) or getattr(block, "attn", None)
        if attn is not None:
            table[f"blocks.{i}.attn"] = SiteBinding(attn, MaybeTuple(PatchTokens()), _channels(attn))
        table[f"blocks.{i}"] = SiteBinding(block, layout, _norm_width(block))
    return table


def _norm_width(block: nn.Module) -> int:
    for attr in ("dim", "inner_dim"):
        if isinstance(getattr(block, attr, None), int):
            return getattr(block, attr)
    attn = getattr(block, "attn1", None) or block.attn
    return int(attn.to_out[0].out_features)


def site_table(denoiser: nn.Module) -> dict[str, SiteBinding]:
    """Every site of ``denoiser`` in forward order, bound to its module and layout."""
    if hasattr(denoiser, "down_blocks") and hasattr(denoiser, "up_blocks"):
        return _unet_table(denoiser)
    if hasattr(denoiser, "transformer_blocks"):
        return _transformer_table(denoiser)
    raise SteeringError(f"{type(denoiser).__name__} is neither a UNet (down_blocks/up_blocks) nor a "
                        "transformer (transformer_blocks); no site table for it")


_SPELLING = re.compile(r"^(down|up)\.\d+(\.attn\.\d+)?$|^mid(\.attn\.\d+)?$|^blocks\.\d+(\.attn)?$")


def resolve(table: dict[str, SiteBinding], site: str) -> SiteBinding:
    """The binding of ``site``, or an error listing the close names and the spelling rule."""
    if site in table:
        return table[site]
    close = difflib.get_close_matches(site, list(table), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    rule = "" if _SPELLING.match(site) else (" Image sites are spelled down.N, mid, up.N (with .attn.J "
                                             "for attention outputs) or blocks.N for transformers.")
    raise SteeringError(f"no site {site!r} in this denoiser ({len(table)} sites: {', '.join(table)}){hint}."
                        f"{rule}")
