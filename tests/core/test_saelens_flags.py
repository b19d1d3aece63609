"""Every SAELens cfg.json flag: folders laid out as sae-lens 6 (and < 6) writes them, loaded by
polysteer, compared with the SAELens math computed here from its definitions on the raw tensors."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

from polysteer.errors import CorruptFileError, PolysteerError
from polysteer.features.saelens import SAELensWarning, load_saelens, saelens_config

D_IN, D_SAE = 16, 40


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the SAELens forward pass, written from its definition on the unfolded weights --------------
def reference_encode(cfg: dict, w: dict, x: torch.Tensor) -> torch.Tensor:
    """SAELens ``encode``: process_sae_in (x - b_dec if apply_b_dec_to_input), then per architecture."""
    flat = saelens_config(cfg)
    arch = flat["architecture"]
    if arch == "standard" and flat.get("activation_fn") == "topk":
        arch = "topk"
    sae_in = x - w["b_dec"] * float(flat.get("apply_b_dec_to_input", True))
    if arch == "gated":
        gate = (sae_in @ w["W_enc"] + w["b_gate"]) > 0
        magnitude = torch.relu(sae_in @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
        return gate * magnitude
    hidden_pre = sae_in @ w["W_enc"] + w["b_enc"]
    if arch == "standard":
        return torch.relu(hidden_pre)
    if arch == "jumprelu":
        threshold = w["threshold"] if "threshold" in w else w["log_threshold"].exp()
        return torch.relu(hidden_pre) * (hidden_pre > threshold)
    if flat.get("rescale_acts_by_decoder_norm"):
        hidden_pre = hidden_pre * w["W_dec"].norm(dim=-1)
    k = flat.get("k") or flat["activation_fn_kwargs"]["k"]
    values, indices = hidden_pre.topk(k, dim=-1)
    return torch.zeros_like(hidden_pre).scatter(-1, indices, values.relu())


def reference_decode(cfg: dict, w: dict, f: torch.Tensor) -> torch.Tensor:
    """SAELens ``decode``: optional finetuning scale, optional decoder-norm rescale, then W_dec, b_dec."""
    flat = saelens_config(cfg)
    if flat.get("finetuning_scaling_factor"):
        f = f * w["scaling_factor"]
    if flat.get("rescale_acts_by_decoder_norm"):
        f = f / w["W_dec"].norm(dim=-1)
    return f @ w["W_dec"] + w["b_dec"]


def weights(arch: str, seed: int = 3, decoder_norms: bool = True) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    w = {"W_enc": torch.randn(D_IN, D_SAE, generator=g) / D_IN ** 0.5,
         "W_dec": torch.randn(D_SAE, D_IN, generator=g), "b_dec": torch.randn(D_IN, generator=g)}
    if decoder_norms:  # decoder rows of very different norms, as an unnormalised TopK decoder has
        w["W_dec"] = w["W_dec"] * torch.logspace(-1.5, 1.5, D_SAE)[torch.randperm(D_SAE, generator=g), None]
    if arch == "gated":
        w.update(b_gate=torch.randn(D_SAE, generator=g) * 0.3, b_mag=torch.randn(D_SAE, generator=g) * 0.3,
                 r_mag=torch.randn(D_SAE, generator=g) * 0.5)
    else:
        w["b_enc"] = torch.randn(D_SAE, generator=g) * 0.3
    if arch == "jumprelu":
        w["threshold"] = torch.rand(D_SAE, generator=g) * 0.5
    return w


def v6_cfg(arch: str, **fields) -> dict:
    """cfg.json as ``SAE.save_model`` in sae-lens 6 writes it (``SAEConfig.to_dict``)."""
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.5.1", "sae_lens_training_version": "6.5.1",
                        "model_name": "gpt2", "hook_name": "blocks.4.hook_resid_post",
                        "hook_head_index": None, "context_size": 128, "prepend_bos": True,
                        "dataset_path": "monology/pile-uncopyrighted", "seqpos_slice": [None],
                        "model_from_pretrained_kwargs": {"center_writing_weights": False},
                        "model_class_name": "HookedTransformer", "exclude_special_tokens": False},
           "architecture": arch}
    if arch == "topk":
        cfg.update(k=5, rescale_acts_by_decoder_norm=False)
    cfg.update(fields)
    return cfg


def write(folder, cfg: dict, w: dict, dtype: torch.dtype = torch.float32):
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.to(dtype).contiguous() for k, v in w.items()}, str(folder / "sae_weights.safetensors"))
    return folder


def _inputs(seed: int = 4) -> torch.Tensor:
    return torch.randn(64, D_IN, generator=_gen(seed)) * 3


def check_exact(folder, cfg, w, atol=1e-4):
    sae = load_saelens(folder)
    x = _inputs()
    expected, got = reference_encode(cfg, w, x), sae.encode(x)
    assert (got != 0).equal(expected != 0), "the same features must fire"
    assert (got - expected).abs().max() <= atol * max(1.0, float(expected.abs().max()))
    recon = reference_decode(cfg, w, expected)
    assert (sae.decode(got) - recon).abs().max() <= atol * max(1.0, float(recon.abs().max()))
    return sae


# -- handled flags ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu", "gated"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens6_folders_load_exactly(tmp_path, arch, apply_b_dec):
    cfg, w = v6_cfg(arch, apply_b_dec_to_input=apply_b_dec), weights(arch)
    sae = check_exact(write(tmp_path / "sae", cfg, w), cfg, w)
    assert sae.info.site == "blocks.4.resid_post" and sae.info.details["architecture"] == arch
    assert sae.info.details["recorded"]["context_size"] == 128
    assert sae.info.details["unread_keys"] == []


def test_topk_rescaled_by_decoder_norm_encodes_like_saelens(tmp_path):
    cfg, w = v6_cfg("topk", rescale_acts_by_decoder_norm=True), weights("topk")
    sae = check_exact(write(tmp_path / "sae", cfg, w), cfg, w)
    assert sae.info.details["rescale_acts_by_decoder_norm"] is True
    # the flag matters here: ignoring it (the old behaviour) picks other features
    plain = {**cfg, "rescale_acts_by_decoder_norm": False}
    assert not (reference_encode(plain, w, _inputs()) != 0).equal(sae.encode(_inputs()) != 0)


def test_a_dead_decoder_row_reads_zero_under_rescaling(tmp_path):
    cfg, w = v6_cfg("topk", rescale_acts_by_decoder_norm=True), weights("topk")
    w["W_dec"][7] = 0
    sae = load_saelens(write(tmp_path / "sae", cfg, w))
    f = sae.encode(_inputs())
    assert torch.isfinite(f).all() and not f[:, 7].any() and torch.isfinite(sae.decode(f)).all()


def test_gated_weights_become_an_exact_jumprelu(tmp_path):
    cfg, w = v6_cfg("gated"), weights("gated")
    sae = check_exact(write(tmp_path / "sae", cfg, w), cfg, w)
    assert sae.activation == "jumprelu" and sae.info.method == "saelens-gated"
    # the gate really cuts: some features have a positive magnitude but a closed gate
    x = _inputs()
    sae_in = x - w["b_dec"]
    closed_but_positive = ((sae_in @ w["W_enc"] + w["b_gate"]) <= 0) & \
        ((sae_in @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"]) > 0)
    assert closed_but_positive.any()


def test_jumprelu_log_threshold(tmp_path):
    cfg, w = v6_cfg("jumprelu"), weights("jumprelu")
    w["log_threshold"] = w.pop("threshold").log()
    check_exact(write(tmp_path / "sae", cfg, w), cfg, w)


@pytest.mark.parametrize("norm", ["expected_average_only_in", True, False, None])
def test_normalisations_applied_nowhere_at_inference_load(tmp_path, norm):
    cfg, w = v6_cfg("standard", normalize_activations=norm), weights("standard")
    assert load_saelens(write(tmp_path / "sae", cfg, w)).info.details["normalize_activations"] == norm
    check_exact(tmp_path / "sae", cfg, w)


def test_pre_6_topk_written_as_standard_with_a_topk_activation(tmp_path):
    """sae-lens < 6: every key at the top level, TopK as standard + activation_fn_str topk."""
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": 6}, "apply_b_dec_to_input": True,
           "finetuning_scaling_factor": False, "context_size": 1024, "model_name": "pythia-70m",
           "hook_point": "blocks.2.hook_resid_pre", "hook_point_layer": 2,
           "hook_point_head_index": None, "prepend_bos": True, "dataset_path": "",
           "dataset_trust_remote_code": True, "normalize_activations": "none", "dtype": "float32",
           "device": "cpu", "sae_lens_training_version": "3.0.0", "neuronpedia_id": None,
           "model_from_pretrained_kwargs": {}, "seqpos_slice": [None]}
    w = weights("topk")
    sae = check_exact(write(tmp_path / "sae", cfg, w), cfg, w)
    assert sae.activation == "topk" and sae.k == 6 and sae.info.site == "blocks.2.resid_pre"


def test_finetuning_scaling_factor_is_folded_into_the_decoder(tmp_path):
    cfg = v6_cfg("standard", finetuning_scaling_factor=True)
    w = {**weights("standard"), "scaling_factor": torch.rand(D_SAE, generator=_gen(9)) + 0.5}
    check_exact(write(tmp_path / "sae", cfg, w), cfg, w)
    ones = {**weights("standard"), "scaling_factor": torch.ones(D_SAE)}
    check_exact(write(tmp_path / "ones", v6_cfg("standard"), ones), v6_cfg("standard"), ones)
    with pytest.raises(PolysteerError, match="finetuning_scaling_factor"):
        load_saelens(write(tmp_path / "bad", v6_cfg("standard"), w))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_load_exactly(tmp_path, dtype):
    cfg, w = v6_cfg("jumprelu", dtype=str(dtype).split(".")[1]), weights("jumprelu")
    w = {k: v.to(dtype).float() for k, v in w.items()}  # the values the file holds
    sae = check_exact(write(tmp_path / "sae", cfg, w, dtype), cfg, w)
    assert sae.info.details["dtype"] == str(dtype).split(".")[1]
    assert torch.equal(sae.W_dec, w["W_dec"])


def test_training_settings_are_recorded_and_unknown_keys_reported(tmp_path):
    cfg = v6_cfg("jumprelu", jumprelu_bandwidth=0.05, l0_coefficient=5.0, decoder_init_norm=0.1,
                 wandb_project="x")
    w = weights("jumprelu")
    with pytest.warns(SAELensWarning, match=r"\['wandb_project'\]"):
        sae = load_saelens(write(tmp_path / "sae", cfg, w))
    assert sae.info.details["unread_keys"] == ["wandb_project"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_saelens(write(tmp_path / "quiet", v6_cfg("jumprelu", l0_coefficient=5.0), w))


# -- refused flags ------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, tensors, key", [
    ({"normalize_activations": "constant_norm_rescale"}, {}, "normalize_activations"),
    ({"normalize_activations": "layer_norm"}, {}, "normalize_activations"),
    ({"reshape_activations": "hook_z"}, {}, "reshape_activations"),
    ({"metadata": {"hook_name": "blocks.1.attn.hook_z", "hook_head_index": 3}}, {}, "hook_head_index"),
    ({"architecture": "transcoder", "d_out": D_IN}, {}, "architecture"),
    ({"architecture": "jumprelu_transcoder"}, {}, "architecture"),
    ({"architecture": "batchtopk", "k": 5}, {}, "architecture"),
    ({"architecture": "matryoshka_batchtopk"}, {}, "architecture"),
    ({"rescale_acts_by_decoder_norm": True}, {}, "rescale_acts_by_decoder_norm"),
    ({"activation_fn": "tanh-relu"}, {}, "activation_fn"),
    ({}, {"b_gate": torch.zeros(D_SAE)}, r"\['b_gate'\]"),
])
def test_unsupported_flags_are_refused_by_name(tmp_path, fields, tensors, key):
    cfg = v6_cfg("standard", **fields)
    w = {**weights("standard"), **tensors}
    with pytest.raises(PolysteerError, match=key):
        load_saelens(write(tmp_path / "sae", cfg, w))


def test_a_topk_without_k_and_a_bad_k_are_clear_errors(tmp_path):
    cfg = v6_cfg("topk")
    del cfg["k"]
    with pytest.raises(CorruptFileError, match="k"):
        load_saelens(write(tmp_path / "a", cfg, weights("topk")))
    with pytest.raises(CorruptFileError, match="k must be a whole number"):
        load_saelens(write(tmp_path / "b", v6_cfg("topk", k=2.5), weights("topk")))
