"""Canonical site names for decoder-only text models, as a site table per architecture.

A site is named ``blocks.N.KIND``: KIND is one of

- ``resid_pre``: the residual stream entering decoder block N (a forward *pre*-hook on the block;
  the activation is ``args[0]`` or ``kwargs["hidden_states"]``);
- ``attn_out``: what the attention module adds to the residual stream (a forward hook on the
  attention module; its output is a tuple whose item 0 is the tensor);
- ``mlp_out``: what the MLP adds to the residual stream (a forward hook; its output is a tensor);
- ``resid_post``: the residual stream leaving block N, which is ``resid_pre`` of block N+1
  (a forward hook on the block; a Tensor in transformers 5.x, a tuple whose item 0 is the tensor
  in 4.x and in some families even in 5.x: the layout reads both).

Every site's tensor has the layout ``(batch, positions, hidden_size)``. :func:`site_table` builds
the core :class:`polysteer.SiteTable` of a model from its ``config.model_type`` (one family record
per architecture, in the spirit of pyvene's per-architecture tables); module paths are relative to
the model given (a ``*ForCausalLM`` or its bare base model). In every family listed here,
``resid_post == resid_pre + attn_out + mlp_out`` in eval mode.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import torch

from polysteer import BPC, MaybeTuple, Site, SiteBinding, SiteTable, SteeringError

OutputKind = Literal["tensor", "tuple", "tensor_or_tuple"]

#: Site kinds in the order they are computed inside one block.
SITE_KINDS: tuple[str, ...] = ("resid_pre", "attn_out", "mlp_out", "resid_post")


@dataclass(frozen=True)
class _Family:
    base: str  # attribute of the *ForCausalLM model that holds the base model
    layers: str  # the ModuleList of blocks, relative to the base model
    attn: str  # attention module, relative to one block
    mlp: str  # MLP module, relative to one block
    block_output: OutputKind  # what a block returns in the installed transformers


_BLOCK_NOTE = "block output: a Tensor in transformers 5.x, a tuple (item 0) in 4.x"
_TUPLE_NOTE = "block output: a tuple (hidden_states, attn_weights), item 0 is the tensor"

# Llama-shaped families: pre-norm blocks with self_attn and mlp under model.layers.
_LLAMA = _Family("model", "layers", "self_attn", "mlp", "tensor_or_tuple")

_FAMILIES: Mapping[str, _Family] = MappingProxyType({
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "phi3": _LLAMA,
    "phi": _LLAMA,  # parallel attention and MLP, same module names
    "olmo": _LLAMA,
    "smollm3": _LLAMA,
    "starcoder2": _LLAMA,
    "gpt2": _Family("transformer", "h", "attn", "mlp", "tensor_or_tuple"),
    "gptj": _Family("transformer", "h", "attn", "mlp", "tensor_or_tuple"),
    # GPT-Neo blocks still return (hidden_states, attn_weights) in transformers 5.x.
    "gpt_neo": _Family("transformer", "h", "attn", "mlp", "tuple"),
    "gpt_neox": _Family("gpt_neox", "layers", "attention", "mlp", "tensor_or_tuple"),
})


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values that have a site table, sorted."""
    return sorted(_FAMILIES)


def _family(model_type: str) -> _Family:
    """The family record for ``model_type``, or an error naming the supported ones."""
    family = _FAMILIES.get(model_type)
    if family is None:
        raise SteeringError(
            f"no site table for model_type {model_type!r}; supported model types: "
            f"{', '.join(supported_model_types())}. Add a table to "
            "polysteer.plugins.text.sites or use a model of a supported architecture"
        )
    return family


def _model_type(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not model_type:
        raise SteeringError(
            f"{type(model).__name__} has no config.model_type: text sites need a transformers "
            "causal LM (load one with polysteer.plugins.text.models.load_causal_lm)"
        )
    return str(model_type)


def _base_model(model: torch.nn.Module, family: _Family) -> torch.nn.Module:
    """The base model: ``model.<base>`` for a ``*ForCausalLM``, else ``model`` itself."""
    base = getattr(model, family.base, None)
    return base if isinstance(base, torch.nn.Module) else model


def _blocks(model: torch.nn.Module, family: _Family) -> torch.nn.ModuleList:
    try:
        blocks = _base_model(model, family).get_submodule(family.layers)
    except AttributeError as err:
        raise SteeringError(
            f"{type(model).__name__} (model_type {_model_type(model)!r}) has no "
            f"'{family.base}.{family.layers}' block list; its layout differs from the "
            "site table for its model_type"
        ) from err
    if not isinstance(blocks, torch.nn.ModuleList):
        raise SteeringError(f"'{family.layers}' of {type(model).__name__} is not a ModuleList")
    return blocks


def _hidden_size(model: torch.nn.Module) -> int:
    config = model.config
    size = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if not size:
        raise SteeringError(f"{type(model).__name__}'s config has no hidden_size")
    return int(size)


def _kind_rows(family: _Family, block: str, channels: int) -> dict[str, Site]:
    """The four sites of one block (module path ``block``), in computation order."""
    # tuple-or-tensor values are read through MaybeTuple, so a transformers release that changes
    # what a block returns cannot make a site read the wrong item
    return {
        "resid_pre": Site(block, BPC(), channels, hook="input",
                          note="block input: args[0] or kwargs['hidden_states']"),
        "attn_out": Site(f"{block}.{family.attn}", MaybeTuple(BPC()), channels,
                         note="attention output: a tuple, item 0 is the tensor"),
        "mlp_out": Site(f"{block}.{family.mlp}", BPC(), channels, note="MLP output: a tensor"),
        "resid_post": Site(block, MaybeTuple(BPC()), channels,
                           note=_TUPLE_NOTE if family.block_output == "tuple" else _BLOCK_NOTE),
    }


_TABLES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, SiteTable]] = weakref.WeakKeyDictionary()


def site_table(model: torch.nn.Module, name: str | None = None) -> SiteTable:
    """The site table of ``model`` (a ``*ForCausalLM`` or its base model), block by block.

    Paths are relative to ``model``: ``model.layers.3.mlp`` for a Llama causal LM, ``layers.3.mlp``
    for its bare base model. ``name`` names the model in errors (default: its model_type).
    """
    model_type = _model_type(model)
    family = _family(model_type)
    prefix = "" if _base_model(model, family) is model else f"{family.base}."
    blocks = _blocks(model, family)
    # adapters ask for the table at every bind(); rebuild only if the block list changed
    key = (model_type, prefix, id(blocks), len(blocks), name)
    cached = _TABLES.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    channels = _hidden_size(model)
    rows = ((f"blocks.{i}.{kind}", site)
            for i in range(len(blocks))
            for kind, site in _kind_rows(family, f"{prefix}{family.layers}.{i}", channels).items())
    table = SiteTable(rows, owner=f"{name} ({model_type})" if name else f"this {model_type} model")
    _TABLES[model] = (key, table)
    return table


def list_sites(model: torch.nn.Module) -> list[str]:
    """Every site of ``model``, block by block in computation order."""
    return site_table(model).sites()


def resolve_site(model: torch.nn.Module, site: str) -> SiteBinding:
    """Bind a canonical site name such as ``blocks.12.resid_post`` to a module of ``model``."""
    return site_table(model).resolve(model, site)
