"""Site tables: every site of every family binds to the activation its name promises.

Tiny random models are built from configs, so these run in seconds without any download.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from polysteer import BPC, MaybeTuple, SiteBinding, SiteTable, UnknownSiteError
from polysteer.errors import PolysteerError
from polysteer.plugins.text.sites import (
    SITE_KINDS,
    list_sites,
    resolve_site,
    site_table,
    supported_model_types,
)

transformers = pytest.importorskip("transformers")

BATCH, SEQ, HIDDEN, LAYERS = 2, 5, 32, 2
_IDS = dict(vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_LLAMA = dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8, **_IDS)
_GPT = dict(n_embd=HIDDEN, n_layer=LAYERS, n_head=4, **_IDS)
_NEOX = dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
             num_attention_heads=4, **_IDS)

# (model_type, config kwargs): one tiny config per family, plus variants worth covering.
TINY: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", _LLAMA),
    "mistral": ("mistral", _LLAMA),
    "qwen2": ("qwen2", _LLAMA),
    "qwen3": ("qwen3", _LLAMA),
    "gemma": ("gemma", _LLAMA),
    "phi3": ("phi3", _LLAMA),
    "phi": ("phi", _LLAMA),
    "olmo": ("olmo", _LLAMA),
    "smollm3": ("smollm3", _LLAMA),
    "starcoder2": ("starcoder2", _LLAMA),
    "gpt2": ("gpt2", _GPT),
    "gptj": ("gptj", dict(_GPT, rotary_dim=4)),
    "gpt_neo": ("gpt_neo", dict(hidden_size=HIDDEN, num_layers=LAYERS, num_heads=4,
                                attention_types=[[["global", "local"], 1]], window_size=4,
                                **_IDS)),
    "gpt_neox": ("gpt_neox", _NEOX),
    "gpt_neox-serial": ("gpt_neox", dict(_NEOX, use_parallel_residual=False)),
}


def _config(key: str) -> Any:
    model_type, kwargs = TINY[key]
    try:
        return transformers.AutoConfig.for_model(model_type, **kwargs)
    except (KeyError, ValueError):
        pytest.skip(f"this transformers has no {model_type!r}")


def _tiny_lm(key: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(_config(key)).eval()


def _tensor(value: Any) -> torch.Tensor:
    """The activation inside a hook's value: the tensor itself or item 0 of a tuple."""
    return value[0] if isinstance(value, tuple) else value


def _check_kind(value: Any, layout: Any) -> None:
    """What a hook sees is what the binding's layout reads: a tensor, or a tensor or a tuple."""
    if isinstance(layout, BPC):
        assert isinstance(value, torch.Tensor)
    else:
        assert isinstance(layout, MaybeTuple) and isinstance(layout.inner, BPC)
        assert isinstance(_tensor(value), torch.Tensor)


def _capture(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model`` once with a hook on every site; return each site's activation."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for site in list_sites(model):
        resolved = resolve_site(model, site)
        if resolved.hook == "input":
            def pre(_m, args, kwargs, site=site, kind=resolved.layout):
                value = args[0] if args else kwargs["hidden_states"]
                _check_kind(value, kind)
                seen[site] = value.detach().clone()
            handles.append(resolved.module.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(_m, _args, output, site=site, kind=resolved.layout):
                _check_kind(output, kind)
                seen[site] = _tensor(output).detach().clone()
            handles.append(resolved.module.register_forward_hook(post))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _add_at(model: torch.nn.Module, site: str, vector: torch.Tensor):
    """Install a hook that adds ``vector`` to the activation at ``site``; return its handle."""
    resolved = resolve_site(model, site)
    if resolved.hook == "input":
        def pre(_m, args, kwargs):
            if args:
                return (args[0] + vector, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + vector}
        return resolved.module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(_m, _args, output):
        if isinstance(output, tuple):
            return (output[0] + vector, *output[1:])
        return output + vector
    return resolved.module.register_forward_hook(post)


def _ids() -> torch.Tensor:
    return torch.randint(3, 100, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))


def test_every_supported_family_has_a_tiny_config() -> None:
    assert set(supported_model_types()) <= {model_type for model_type, _ in TINY.values()}
    assert {"llama", "mistral", "qwen2", "gpt2", "gpt_neox"} <= set(supported_model_types())


@pytest.mark.parametrize("key", sorted(TINY))
def test_list_sites_is_in_block_order(key: str) -> None:
    sites = list_sites(_tiny_lm(key))
    assert len(sites) == LAYERS * len(SITE_KINDS)
    assert sites[:4] == [f"blocks.0.{kind}" for kind in SITE_KINDS]
    assert sites[-1] == f"blocks.{LAYERS - 1}.resid_post"


@pytest.mark.parametrize("key", sorted(TINY))
def test_every_site_sees_batch_positions_hidden(key: str) -> None:
    model = _tiny_lm(key)
    acts = _capture(model, _ids())
    assert set(acts) == set(list_sites(model))
    for site, act in acts.items():
        assert act.shape == (BATCH, SEQ, HIDDEN), site
        assert resolve_site(model, site).channels == HIDDEN


@pytest.mark.parametrize("key", sorted(TINY))
def test_sites_sit_where_their_names_say(key: str) -> None:
    model = _tiny_lm(key)
    ids = _ids()
    acts = _capture(model, ids)
    with torch.no_grad():
        hidden_states = model(ids, output_hidden_states=True).hidden_states
    for n in range(LAYERS):
        pre, post = acts[f"blocks.{n}.resid_pre"], acts[f"blocks.{n}.resid_post"]
        # The residual stream entering block n is the hidden state transformers reports for it.
        assert torch.equal(pre, hidden_states[n])
        if n + 1 < LAYERS:
            assert torch.equal(post, acts[f"blocks.{n + 1}.resid_pre"])
        # Attention and MLP write additively into the residual stream in every family.
        summed = pre + acts[f"blocks.{n}.attn_out"] + acts[f"blocks.{n}.mlp_out"]
        torch.testing.assert_close(post, summed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", sorted(TINY))
def test_writing_through_a_site_changes_the_model(key: str) -> None:
    model = _tiny_lm(key)
    ids = _ids()
    vector = torch.randn(HIDDEN, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model(ids).logits
        handle = _add_at(model, "blocks.0.resid_post", vector)
        try:
            via_post = model(ids).logits
        finally:
            handle.remove()
        handle = _add_at(model, "blocks.1.resid_pre", vector)
        try:
            via_pre = model(ids).logits
        finally:
            handle.remove()
        again = model(ids).logits
    assert not torch.allclose(plain, via_post)
    # resid_post of block 0 and resid_pre of block 1 are one point in the residual stream.
    torch.testing.assert_close(via_post, via_pre, rtol=0, atol=0)
    assert torch.equal(plain, again)


def test_bare_base_model_resolves_the_same_modules() -> None:
    lm = _tiny_lm("llama")
    base = lm.model
    assert list_sites(base) == list_sites(lm)
    for site in list_sites(lm):
        assert resolve_site(base, site).module is resolve_site(lm, site).module


@pytest.mark.parametrize("key", sorted(TINY))
def test_table_paths_exist_and_resolve_through_the_core_table(key: str) -> None:
    model = _tiny_lm(key)
    table = site_table(model)
    assert isinstance(table, SiteTable) and table.sites() == list_sites(model)
    for site, row in table.items():
        binding = resolve_site(model, site)
        assert model.get_submodule(row.module) is binding.module
        assert (row.hook, row.layout, row.channels) == (binding.hook, binding.layout, binding.channels)
        assert row.note


def test_llama_table_matches_the_documented_layout() -> None:
    table = site_table(_tiny_lm("llama"))
    assert table["blocks.1.resid_pre"].module == "model.layers.1"
    assert table["blocks.1.resid_pre"].hook == "input"
    assert table["blocks.1.attn_out"].module == "model.layers.1.self_attn"
    assert table["blocks.1.attn_out"].layout == MaybeTuple(BPC())
    assert table["blocks.1.mlp_out"].layout == BPC()
    assert table["blocks.1.resid_post"].layout == MaybeTuple(BPC())
    assert site_table(_tiny_lm("gpt2"))["blocks.1.mlp_out"].module == "transformer.h.1.mlp"
    assert site_table(_tiny_lm("llama").model)["blocks.1.mlp_out"].module == "layers.1.mlp"


def test_binding_is_frozen() -> None:
    binding = resolve_site(_tiny_lm("gpt2"), "blocks.1.mlp_out")
    assert isinstance(binding, SiteBinding)
    with pytest.raises(dataclasses.FrozenInstanceError):
        binding.channels = 3  # type: ignore[misc]


def test_misspelt_site_names_the_closest_sites() -> None:
    with pytest.raises(UnknownSiteError) as err:
        resolve_site(_tiny_lm("llama"), "blocks.1.resid_psot")
    message = str(err.value)
    assert "Did you mean 'blocks.1.resid_post'" in message
    assert "blocks.0..1.{resid_pre,attn_out,mlp_out,resid_post}" in message
    assert "polysteer sites MODEL" in message


@pytest.mark.parametrize("site", ["blocks.2.resid_post", "blocks.01.resid_post",
                                  "blocks.-1.mlp_out", "layers.0.resid_pre", ""])
def test_bad_site_names_are_errors(site: str) -> None:
    with pytest.raises(PolysteerError, match="0..1.*polysteer sites MODEL"):
        resolve_site(_tiny_lm("llama"), site)


def test_unknown_architecture_names_the_supported_ones() -> None:
    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(model_type="bert", hidden_size=2)
    for call in (lambda: list_sites(model), lambda: resolve_site(model, "blocks.0.resid_pre"),
                 lambda: site_table(model)):
        with pytest.raises(PolysteerError, match="'bert'.*gpt2.*llama.*qwen2"):
            call()


def test_a_module_without_config_is_refused() -> None:
    with pytest.raises(PolysteerError, match="model_type"):
        list_sites(torch.nn.Linear(2, 2))


def test_table_is_reused_until_the_block_list_changes() -> None:
    model = _tiny_lm("llama")
    table = site_table(model)
    assert site_table(model) is table  # bind() asks for it every time: built once
    model.model.layers = torch.nn.ModuleList(list(model.model.layers)[:1])
    assert list_sites(model) == [f"blocks.0.{kind}" for kind in SITE_KINDS]
    with pytest.raises(UnknownSiteError, match=r"sites are blocks\.0\.\{resid_pre,"):
        resolve_site(model, "blocks.1.resid_post")
