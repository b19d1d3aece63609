"""SAELens interop: round trips, hand-written SAELens folders against the SAELens math, errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from polysteer.errors import CorruptFileError, PolysteerError
from polysteer.features.dictionary import DictionaryInfo, SparseAutoencoder
from polysteer.features.fingerprint import fingerprint
from polysteer.features.saelens import (
    SAELENS_FORMAT,
    export_saelens,
    hook_from_site,
    load_saelens,
    site_from_hook,
)
from polysteer.models.reference import ReferenceLM

D_IN, D_SAE = 8, 12


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sae(activation: str, model=None) -> SparseAutoencoder:
    info = DictionaryInfo(model=model, site="blocks.1.resid_post", site_norm=3.5, method="sae-test",
                          details={"fve": 0.9})
    sae = SparseAutoencoder(D_IN, D_SAE, info, activation, k=3 if activation == "topk" else None,
                            labels=[f"f{i}" for i in range(D_SAE)])
    g = _gen(1)
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=g))
        sae.threshold.copy_(torch.rand(D_SAE, generator=g) if activation == "jumprelu" else 0)
        sae.feature_scale.copy_(torch.rand(D_SAE, generator=g) + 0.5)
    return sae


@pytest.mark.parametrize("activation", ["topk", "jumprelu", "relu"])
def test_export_then_load_round_trips_exactly(tmp_path, activation):
    model = fingerprint(ReferenceLM(), "reference")
    sae = _sae(activation, model)
    folder = export_saelens(sae, tmp_path / "sae")
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "polysteer.json",
                                                        "sae_weights.safetensors"]
    assert SAELENS_FORMAT.detect(folder)
    back = SAELENS_FORMAT.load(folder)
    assert back.activation == sae.activation and back.k == sae.k and back.labels == sae.labels
    assert back.info.to_json() == sae.info.to_json()
    for name, value in sae.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name
    x = torch.randn(5, D_IN, generator=_gen(2))
    assert torch.equal(back.encode(x), sae.encode(x))
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["hook_name"] == "blocks.1.hook_resid_post" and cfg["apply_b_dec_to_input"] is True
    assert cfg["architecture"] == {"relu": "standard"}.get(activation, activation)


def test_export_replaces_an_existing_folder(tmp_path):
    export_saelens(_sae("relu"), tmp_path / "sae")
    export_saelens(_sae("topk"), tmp_path / "sae")
    assert load_saelens(tmp_path / "sae").activation == "topk"
    # a replaced folder is a link to its one live version (atomic for readers), nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["sae", os.readlink(tmp_path / "sae")])


# -- a hand-written SAELens folder vs. the SAELens math -----------------------------------------
def saelens_encode(cfg: dict, w: dict, x: torch.Tensor) -> torch.Tensor:
    """The SAELens encoder, written from its definition (standard / jumprelu / topk)."""
    sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"]
    hidden_pre = sae_in @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "standard":
        return torch.relu(hidden_pre)
    if cfg["architecture"] == "jumprelu":
        return torch.relu(hidden_pre) * (hidden_pre > w["threshold"])
    top = torch.topk(hidden_pre, cfg["activation_fn_kwargs"]["k"], dim=-1)
    return torch.zeros_like(hidden_pre).scatter(-1, top.indices, torch.relu(top.values))


def saelens_decode(w: dict, f: torch.Tensor) -> torch.Tensor:
    return f @ w["W_dec"] + w["b_dec"]


def write_saelens(folder, architecture="standard", apply_b_dec=True, **extra):
    folder.mkdir()
    g = _gen(3)
    w = {"W_enc": torch.randn(D_IN, D_SAE, generator=g), "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
         "W_dec": torch.randn(D_SAE, D_IN, generator=g), "b_dec": torch.randn(D_IN, generator=g)}
    if architecture == "jumprelu":
        w["threshold"] = torch.rand(D_SAE, generator=g)
    cfg = {"architecture": architecture, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32",
           "model_name": "gpt2-small", "hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3,
           "hook_head_index": None, "activation_fn_str": "topk" if architecture == "topk" else "relu",
           "activation_fn_kwargs": {"k": 4} if architecture == "topk" else {},
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none", **extra}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(folder / "sae_weights.safetensors"))
    return cfg, w


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_a_saelens_folder_encodes_like_saelens(tmp_path, architecture, apply_b_dec):
    cfg, w = write_saelens(tmp_path / "sae", architecture, apply_b_dec)
    sae = load_saelens(tmp_path / "sae")
    assert sae.info.site == "blocks.3.resid_pre" and sae.info.model is None
    assert sae.info.details["model_name"] == "gpt2-small" and not sae.info.details["site_norm_known"]
    assert sae.activation == {"standard": "relu"}.get(architecture, architecture)
    x = torch.randn(16, D_IN, generator=_gen(4)) * 2
    expected = saelens_encode(cfg, w, x)
    got = sae.encode(x)
    assert (got != 0).equal(expected != 0), "the same features must fire"
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(sae.decode(got), saelens_decode(w, expected), atol=1e-4)
    if architecture == "topk":
        assert sae.k == 4


def test_loading_options_override_the_folder(tmp_path):
    write_saelens(tmp_path / "sae", extra_key="ignored")
    model = fingerprint(ReferenceLM(), "reference")
    with pytest.warns(UserWarning, match="extra_key"):
        sae = load_saelens(tmp_path / "sae", site="blocks.0.mlp_out", model=model, site_norm=7.0)
    assert (sae.info.site, sae.info.model, sae.info.site_norm) == ("blocks.0.mlp_out", model, 7.0)
    assert sae.info.details["site_norm_known"]


def test_site_translation():
    assert site_from_hook("blocks.12.hook_resid_post") == "blocks.12.resid_post"
    assert site_from_hook("blocks.0.hook_mlp_out") == "blocks.0.mlp_out"
    assert site_from_hook("blocks.0.attn.hook_z") is None
    assert hook_from_site("blocks.7.attn_out") == "blocks.7.hook_attn_out"


# -- errors --------------------------------------------------------------------------------------
def test_an_untranslatable_hook_needs_a_site(tmp_path):
    write_saelens(tmp_path / "sae", hook_name="blocks.3.attn.hook_z")
    with pytest.raises(PolysteerError, match="pass site="):
        load_saelens(tmp_path / "sae")
    assert load_saelens(tmp_path / "sae", site="blocks.3.attn_out").info.site == "blocks.3.attn_out"


@pytest.mark.parametrize("norm", ["constant_norm_rescale", "layer_norm"])
def test_run_time_normalisation_is_refused(tmp_path, norm):
    write_saelens(tmp_path / "sae", normalize_activations=norm)
    with pytest.raises(PolysteerError, match=f"normalize_activations='{norm}' is not.*cannot reproduce"):
        load_saelens(tmp_path / "sae")


def test_unknown_architecture_is_refused(tmp_path):
    write_saelens(tmp_path / "sae", architecture="mystery")
    with pytest.raises(PolysteerError, match="architecture='mystery' is not supported"):
        load_saelens(tmp_path / "sae")


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json is missing"):
        load_saelens(tmp_path)
    write_saelens(tmp_path / "sae")
    (tmp_path / "sae" / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="sae_weights.safetensors is missing"):
        load_saelens(tmp_path / "sae")


def test_corrupt_files_are_clear_errors(tmp_path):
    write_saelens(tmp_path / "a")
    (tmp_path / "a" / "cfg.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="cfg.json is not valid JSON"):
        load_saelens(tmp_path / "a")
    write_saelens(tmp_path / "b")
    (tmp_path / "b" / "sae_weights.safetensors").write_bytes(b"truncated")
    with pytest.raises(CorruptFileError, match="safetensors"):
        load_saelens(tmp_path / "b")
    write_saelens(tmp_path / "c", d_sae=D_SAE + 1)
    with pytest.raises(CorruptFileError, match="W_enc has shape"):
        load_saelens(tmp_path / "c")
    write_saelens(tmp_path / "d", architecture="topk", activation_fn_kwargs={})
    with pytest.raises(CorruptFileError, match="k"):
        load_saelens(tmp_path / "d")


def test_a_registered_format_resolves_saelens_folders(tmp_path, plugin_manager):
    from polysteer.steering.runtime import resolve_dictionary

    if "saelens" not in plugin_manager.dictionary_formats.names():
        plugin_manager.dictionary_formats.register("saelens", SAELENS_FORMAT, description="SAELens")
    write_saelens(tmp_path / "sae", "topk")
    sae = resolve_dictionary(str(tmp_path / "sae"), plugins=plugin_manager)
    assert isinstance(sae, SparseAutoencoder) and sae.k == 4
    _sae("relu").save(tmp_path / "native")
    assert not SAELENS_FORMAT.detect(tmp_path / "native")
    assert resolve_dictionary(str(tmp_path / "native"), plugins=plugin_manager).activation == "relu"
