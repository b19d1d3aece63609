"""Canonical site names for decoder-only text models, bound to modules per architecture.

A site is named ``blocks.N.KIND``: KIND is one of

- ``resid_pre``: the residual stream entering decoder block N (a forward *pre*-hook on the block;
  the activation is ``args[0]`` or ``kwargs["hidden_states"]``);
- ``attn_out``: what the attention module adds to the residual stream (a forward hook on the
  attention module; its output is a tuple whose item 0 is the tensor);
- ``mlp_out``: what the MLP adds to the residual stream (a forward hook; its output is a tensor);
- ``resid_post``: the residual stream leaving block N, which is ``resid_pre`` of block N+1
  (a forward hook on the block; a Tensor in transformers 5.x, a tuple whose item 0 is the tensor
  in 4.x and in some families even in 5.x: callers handle both).

Every site's tensor has the layout ``(batch, positions, hidden_size)``. The tables map each site to
a module path per ``model.config.model_type``, in the spirit of pyvene's per-architecture tables.
In every family listed here, ``resid_post == resid_pre + attn_out + mlp_out`` in eval mode.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import torch

from polysteer.errors import SteeringError

HookKind = Literal["input", "output"]
OutputKind = Literal["tensor", "tuple", "tensor_or_tuple"]

#: Site kinds in the order they are computed inside one block.
SITE_KINDS: tuple[str, ...] = ("resid_pre", "attn_out", "mlp_out", "resid_post")

_SITE_RE = re.compile(r"^blocks\.(0|[1-9][0-9]*)\.([a-z_]+)$")  # canonical spelling only
_LAYER = "{layer}"


@dataclass(frozen=True)
class SiteSpec:
    """One row of a site table: which module holds a site and how its activation is reached.

    ``module`` is a dotted path with ``{layer}`` standing for the block index. In
    :func:`site_table_for` it is relative to the ``*ForCausalLM`` model.
    """

    module: str
    hook: HookKind
    output_kind: OutputKind
    note: str = ""


@dataclass(frozen=True)
class ResolvedSite:
    """A site bound to a live module.

    ``hook`` says whether to use a forward pre-hook (``"input"``: the activation is ``args[0]`` or
    ``kwargs["hidden_states"]``) or a forward hook (``"output"``). ``output_kind`` says how the
    tensor sits in what the hook sees: the value itself, item 0 of a tuple, or either.
    ``channels`` is the hidden size, the last dimension of the ``(batch, positions, channels)``
    activation.
    """

    module: torch.nn.Module
    hook: HookKind
    output_kind: OutputKind
    channels: int


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


def _block_specs(family: _Family) -> dict[str, SiteSpec]:
    """The four site specs of one family, with paths relative to the base model."""
    block = f"{family.layers}.{_LAYER}"
    block_note = _TUPLE_NOTE if family.block_output == "tuple" else _BLOCK_NOTE
    return {
        "resid_pre": SiteSpec(block, "input", "tensor",
                              "block input: args[0] or kwargs['hidden_states']"),
        "attn_out": SiteSpec(f"{block}.{family.attn}", "output", "tuple",
                             "attention output: a tuple, item 0 is the tensor"),
        "mlp_out": SiteSpec(f"{block}.{family.mlp}", "output", "tensor", "MLP output: a tensor"),
        "resid_post": SiteSpec(block, "output", family.block_output, block_note),
    }


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


def site_table_for(model_type: str) -> dict[str, SiteSpec]:
    """The site table of one architecture, for documentation.

    Keys are site templates (``"blocks.{layer}.resid_post"``); each module path is relative to the
    ``*ForCausalLM`` model (for a bare base model, drop the first component).
    """
    family = _family(model_type)
    return {
        f"blocks.{_LAYER}.{kind}": SiteSpec(f"{family.base}.{spec.module}", spec.hook,
                                            spec.output_kind, spec.note)
        for kind, spec in _block_specs(family).items()
    }


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


def list_sites(model: torch.nn.Module) -> list[str]:
    """Every site of ``model``, block by block in computation order."""
    family = _family(_model_type(model))
    n_blocks = len(_blocks(model, family))
    return [f"blocks.{i}.{kind}" for i in range(n_blocks) for kind in SITE_KINDS]


def _unknown_site(model: torch.nn.Module, site: str, n_blocks: int) -> SteeringError:
    """An error naming the closest valid sites and the command that lists them all."""
    close = difflib.get_close_matches(site, list_sites(model), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return SteeringError(
        f"unknown site {site!r}: this {_model_type(model)} model has blocks 0..{n_blocks - 1} "
        f"and site kinds {', '.join(SITE_KINDS)} (e.g. blocks.0.resid_post).{hint} "
        "`polysteer sites MODEL` lists them all"
    )


def _hidden_size(model: torch.nn.Module) -> int:
    config = model.config
    size = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if not size:
        raise SteeringError(f"{type(model).__name__}'s config has no hidden_size")
    return int(size)


def resolve_site(model: torch.nn.Module, site: str) -> ResolvedSite:
    """Bind a canonical site name such as ``blocks.12.resid_post`` to a module of ``model``."""
    family = _family(_model_type(model))
    blocks = _blocks(model, family)
    match = _SITE_RE.match(site)
    if match is None or match[2] not in SITE_KINDS or int(match[1]) >= len(blocks):
        raise _unknown_site(model, site, len(blocks))
    spec = _block_specs(family)[match[2]]
    path = spec.module.replace(_LAYER, match[1])
    module = _base_model(model, family).get_submodule(path)
    return ResolvedSite(module, spec.hook, spec.output_kind, _hidden_size(model))
