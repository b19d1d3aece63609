"""SAELens interop: read and write SAELens-format sparse autoencoder folders.

An SAELens folder holds ``cfg.json`` (``d_in``, ``d_sae``, ``architecture``, ``hook_name``,
``model_name``, ``activation_fn_kwargs``, ``apply_b_dec_to_input``, ``normalize_activations``,
...) and ``sae_weights.safetensors`` (``W_enc (d_in, d_sae)``, ``b_enc``, ``W_dec (d_sae, d_in)``,
``b_dec`` and, for JumpReLU, ``threshold``). It maps onto :class:`SparseAutoencoder`:

========================  ==================================================
SAELens ``architecture``  polysteer ``activation``
========================  ==================================================
``standard``              ``relu``
``jumprelu``              ``jumprelu``
``topk``                  ``topk`` (``k`` from ``activation_fn_kwargs`` or ``k``)
``gated``                 ``jumprelu`` (folded exactly, see below)
========================  ==================================================

Every ``cfg.json`` key SAELens reads is handled or refused by name (SAELens 6 keeps some under
``metadata``; pre-6.0 names such as ``hook_point`` and ``activation_fn_str`` are read too):

* ``architecture``: ``standard`` (relu; ``activation_fn: topk`` as SAELens < 6 wrote TopK SAEs),
  ``topk``, ``jumprelu`` (``threshold`` or ``log_threshold``) and ``gated`` load exactly. A gated
  SAE (``b_gate``, ``b_mag``, ``r_mag``) is a JumpReLU in disguise: with ``W' = W_enc * exp(r_mag)``
  and ``b' = b_mag`` the gate ``x W_enc + b_gate > 0`` is ``x W' + b' > b_mag - exp(r_mag) b_gate``,
  so it loads as ``jumprelu`` with that threshold. Transcoders and training-only ``batchtopk`` /
  ``matryoshka_batchtopk`` checkpoints are refused;
* ``apply_b_dec_to_input: false`` is folded into the encoder bias, ``b_enc' = b_enc + b_dec @ W_enc``;
* ``rescale_acts_by_decoder_norm: true`` (TopK: top-k of ``pre * |W_dec_i|``, decode
  ``(f / |W_dec_i|) @ W_dec``) is folded: ``W_enc`` and ``b_enc`` columns times ``|W_dec_i|``,
  ``W_dec`` rows divided by it (a positive per-feature factor commutes with top-k and ReLU);
* ``finetuning_scaling_factor: true`` (decode ``(f * scaling_factor) @ W_dec``) is folded into
  ``W_dec``;
* ``normalize_activations``: ``none`` and ``expected_average_only_in`` (SAELens applies nothing at
  inference for a folder from disk) load; ``constant_norm_rescale`` and ``layer_norm`` rescale each
  token at run time and undo it on decode, which a linear dictionary cannot reproduce: refused;
* ``reshape_activations: hook_z`` and ``hook_head_index`` (per-head SAEs) are refused;
* ``dtype``: tensors are read as float32 (exact for bfloat16/float16); the value is recorded;
* ``hook_name``: translated to a site (``blocks.12.hook_resid_post`` -> ``blocks.12.resid_post``);
* provenance (``model_name``, ``hook_layer``, ``context_size``, ``dataset_path``, ...) and training
  settings (``l1_coefficient``, ``jumprelu_bandwidth``, ...) do not change the math and are recorded
  in ``info.details``; any other key is listed in ``info.details["unread_keys"]`` with a
  :class:`SAELensWarning` (SAELens itself drops keys its config class does not have);
* a tensor in ``sae_weights.safetensors`` that the architecture does not have is refused by name.

What a SAELens folder does not carry, and what polysteer does about it:

* **model fingerprint**: SAELens records only a model *name*, so the loaded dictionary has
  ``info.model = None`` (usable on any model with the right width) unless you pass ``model=``;
* **site**: translated from ``hook_name`` where it names a residual/attention/MLP output;
  otherwise pass ``site=``;
* **site norm**: unknown; pass ``site_norm=`` (the median token norm at the site), else 1.0 is
  used and ``info.details["site_norm_known"]`` is ``False``.

:func:`export_saelens` writes the two SAELens files plus ``polysteer.json`` (labels, feature
scales, the model fingerprint, site and site norm) so that exporting and loading again gives back
exactly the same dictionary; SAELens ignores the extra file.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from polysteer.errors import CorruptFileError, PolysteerError
from polysteer.features.dictionary import DictionaryFormat, DictionaryInfo, SparseAutoencoder
from polysteer.features.fingerprint import ModelFingerprint
from polysteer.io.fileio import (
    read_folder,
    read_json,
    read_tensors,
    write_folder,
    write_json,
    write_tensors,
)
from polysteer.io.safeload import check_finite_tree, finite

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SIDECAR_FILE = "polysteer.json"

ARCHITECTURES = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk", "gated": "jumprelu"}
_EXPORT_ARCH = {"relu": "standard", "jumprelu": "jumprelu", "topk": "topk"}
_SITE_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out")
_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(" + "|".join(_SITE_KINDS) + r")$")
_SITE = re.compile(r"^blocks\.(\d+)\.(" + "|".join(_SITE_KINDS) + r")$")


class SAELensFormatError(PolysteerError, ValueError):
    """A valid SAELens folder whose SAE polysteer cannot reproduce exactly."""


def site_from_hook(hook_name: str | None) -> str | None:
    """polysteer site for a SAELens/TransformerLens hook name, or ``None`` if there is none."""
    match = _HOOK.match(hook_name or "")
    return f"blocks.{match.group(1)}.{match.group(2)}" if match else None


def hook_from_site(site: str) -> str:
    """SAELens/TransformerLens hook name for a polysteer site (the site itself if no match)."""
    match = _SITE.match(site)
    return f"blocks.{match.group(1)}.hook_{match.group(2)}" if match else site


def is_saelens(path: str | os.PathLike) -> bool:
    """True if ``path`` looks like an SAELens folder (``cfg.json``, no native ``dictionary.json``)."""
    path = Path(path)
    return (path / CFG_FILE).is_file() and not (path / "dictionary.json").exists()


# -- cfg.json: every key SAELens reads is handled here or refused by name ----------------------------
_LEGACY_NAMES = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
                 "hook_point_layer": "hook_layer", "activation_fn_str": "activation_fn"}
"""Pre-6.0 SAELens key names and the names SAELens 6 reads them under."""
_MATH_KEYS = frozenset({
    "architecture", "d_in", "d_sae", "k", "activation_fn", "activation_fn_kwargs",
    "apply_b_dec_to_input", "normalize_activations", "reshape_activations",
    "finetuning_scaling_factor", "rescale_acts_by_decoder_norm", "hook_name", "hook_head_index",
    "d_out", "dtype", "metadata"})
"""Keys that decide what the SAE computes or where it reads: each is handled below."""
_RECORDED_KEYS = frozenset({
    "model_name", "hook_layer", "context_size", "prepend_bos", "dataset_path",
    "dataset_trust_remote_code", "device", "sae_lens_version", "sae_lens_training_version",
    "neuronpedia_id", "model_from_pretrained_kwargs", "seqpos_slice", "model_class_name",
    "exclude_special_tokens", "hf_hook_point_in", "hf_hook_point_out"})
"""Provenance SAELens keeps in its metadata: recorded in ``info.details``, no effect on the math."""
_TRAINING_KEYS = frozenset({
    "decoder_init_norm", "l1_coefficient", "lp_norm", "l1_warm_up_steps", "l0_coefficient",
    "l0_warm_up_steps", "jumprelu_init_threshold", "jumprelu_bandwidth",
    "jumprelu_sparsity_loss_mode", "jumprelu_tanh_scale", "pre_act_loss_coefficient",
    "aux_loss_coefficient", "use_sparse_activations", "topk_threshold_lr", "matryoshka_widths",
    "scale_sparsity_penalty_by_decoder_norm", "normalize_sae_decoder", "decoder_heuristic_init",
    "decoder_orthogonal_init", "init_encoder_as_decoder_transpose", "noise_scale",
    "mse_loss_normalization", "b_dec_init_method", "use_ghost_grads"})
"""Training settings (SAELens drops them when it builds an inference SAE): recorded, no effect."""
_TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder")
_TRAINING_ONLY_ARCHS = ("batchtopk", "matryoshka_batchtopk")
_TENSORS = {"standard": {"W_enc", "b_enc", "W_dec", "b_dec"},
            "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
            "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
            "gated": {"W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec"}}
_NORM_NONE = (None, False, "none")
_NORM_FOLDED = (True, "expected_average_only_in")


class SAELensWarning(UserWarning):
    """A SAELens ``cfg.json`` key polysteer does not know (SAELens itself ignores unknown keys)."""


def saelens_config(cfg: dict) -> dict:
    """``cfg`` as SAELens 6 reads it: ``metadata`` flattened in, pre-6.0 key names renamed."""
    flat = {k: v for k, v in cfg.items() if k != "metadata"}
    meta = cfg.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(meta).__name__}")
    for key, value in (meta or {}).items():
        flat.setdefault(key, value)
    for old, new in _LEGACY_NAMES.items():
        if old in flat:
            value = flat.pop(old)
            flat.setdefault(new, value)
    return flat


def _refuse(folder: Path, key: str, value: Any, why: str, fix: str) -> SAELensFormatError:
    return SAELensFormatError(f"{folder}: {CFG_FILE} key {key}={value!r} is not supported: {why}; "
                              f"{fix}")


def load_saelens(folder: str | os.PathLike, site: str | None = None,
                 model: ModelFingerprint | None = None,
                 site_norm: float | None = None) -> SparseAutoencoder:
    """Load an SAELens folder as a :class:`SparseAutoencoder` (see the module docs for the mapping).

    Args:
        folder: folder with ``cfg.json`` and ``sae_weights.safetensors``.
        site: polysteer site; default: translated from ``hook_name`` (required if untranslatable).
        model: fingerprint to tie the dictionary to; an SAELens folder carries none, so the
            default is ``None`` (checked only by width), or the one saved by :func:`export_saelens`.
        site_norm: typical token norm at the site; default: saved by :func:`export_saelens`, else 1.0.
    """
    folder = Path(folder)
    return read_folder(folder, lambda real: _load_files(real, folder, site, model, site_norm))


def _load_files(real: Path, folder: Path, site: str | None, model: ModelFingerprint | None,
                site_norm: float | None) -> SparseAutoencoder:
    """Read one version of the folder (a concurrent export never mixes in) and check it."""
    cfg_path, weights_path = real / CFG_FILE, real / WEIGHTS_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"{folder} is not an SAELens folder: {CFG_FILE} is missing")
    if not weights_path.exists():
        raise FileNotFoundError(f"{folder} is not a complete SAELens folder: {WEIGHTS_FILE} is missing "
                                "(is the download finished?)")
    cfg = read_json(cfg_path)
    tensors = read_tensors(weights_path)
    side = read_json(real / SIDECAR_FILE) if (real / SIDECAR_FILE).exists() else {}
    if not isinstance(cfg, dict) or not isinstance(side, dict):
        raise CorruptFileError(f"{folder}: {CFG_FILE} and {SIDECAR_FILE} must hold JSON objects")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CorruptFileError(f"{folder / WEIGHTS_FILE}: tensor {name!r} holds NaN or "
                                   "infinite values; re-download or re-export it")
    if "site_norm" in side:
        finite(side["site_norm"], f"{folder / SIDECAR_FILE}: site_norm", low=0.0,
               error=CorruptFileError)
    check_finite_tree(cfg, f"{folder / CFG_FILE}", error=CorruptFileError)
    try:
        return _build(folder, cfg, tensors, side, site, model, site_norm)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError,
            OverflowError) as err:
        if isinstance(err, PolysteerError):
            raise
        raise CorruptFileError(
            f"{folder} is not a valid SAELens folder ({type(err).__name__}: {err}); check "
            f"{CFG_FILE} and {WEIGHTS_FILE} or re-download them") from err


def _build(folder: Path, cfg: dict, tensors: dict[str, torch.Tensor], side: dict, site: str | None,
           model: ModelFingerprint | None, site_norm: float | None) -> SparseAutoencoder:
    flat = saelens_config(cfg)
    arch = flat.get("architecture") or "standard"
    fn = flat.get("activation_fn") or "relu"
    kwargs = flat.get("activation_fn_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"activation_fn_kwargs must be a JSON object, got {kwargs!r}")
    if arch == "standard" and fn == "topk":  # SAELens < 6 wrote TopK SAEs as standard + topk
        arch = "topk"
    if arch in _TRANSCODERS:
        raise _refuse(folder, "architecture", arch, "a transcoder reads one site and writes another "
                      "(d_out), which a polysteer dictionary (one site) cannot express",
                      "load a sparse autoencoder (standard, topk, jumprelu or gated) instead")
    if arch in _TRAINING_ONLY_ARCHS:
        raise _refuse(folder, "architecture", arch, "this is a SAELens training checkpoint",
                      "save it with SAELens's save_inference_model (it becomes jumprelu) and load that")
    if arch not in _TENSORS:
        raise _refuse(folder, "architecture", arch, "unknown SAE architecture",
                      "polysteer loads standard, topk, jumprelu and gated SAEs")
    if arch == "standard" and fn != "relu":
        raise _refuse(folder, "activation_fn", fn, "polysteer's standard SAEs use relu",
                      "convert the SAE to a relu, topk or jumprelu one")
    norm = flat.get("normalize_activations")
    if norm not in _NORM_NONE + _NORM_FOLDED:
        raise _refuse(folder, "normalize_activations", norm, "it rescales every token at run time "
                      "(and undoes it on decode), which a polysteer dictionary cannot reproduce",
                      "use an SAE trained with 'none' or 'expected_average_only_in'")
    reshape = flat.get("reshape_activations") or "none"
    if reshape != "none":
        raise _refuse(folder, "reshape_activations", reshape, "the SAE reads per-head attention "
                      "outputs (hook_z), which are no polysteer site", "use a residual, attn_out or "
                      "mlp_out SAE")
    if flat.get("hook_head_index") is not None:
        raise _refuse(folder, "hook_head_index", flat["hook_head_index"], "the SAE reads a single "
                      "attention head", "use an SAE on a whole site")
    if flat.get("d_out") is not None and flat.get("d_out") != flat.get("d_in"):
        raise _refuse(folder, "d_out", flat["d_out"], "a transcoder writes another width",
                      "load a sparse autoencoder instead")
    rescale = bool(flat.get("rescale_acts_by_decoder_norm", False))
    if rescale and arch != "topk":
        raise _refuse(folder, "rescale_acts_by_decoder_norm", True, f"SAELens defines it only for "
                      f"topk SAEs, this one is {arch}", "remove the key if the SAE does not use it")
    k = None
    if arch == "topk":
        k = flat.get("k", kwargs.get("k"))
        if k is None:
            raise KeyError("k (a topk SAE needs k or activation_fn_kwargs.k)")
        if isinstance(k, bool) or not isinstance(k, int | float) or int(k) != k:
            raise ValueError(f"k must be a whole number, got {k!r}")
        k = int(k)

    d_in, d_sae = int(flat["d_in"]), int(flat["d_sae"])
    expected = set(_TENSORS[arch])
    if arch == "jumprelu" and "threshold" not in tensors and "log_threshold" in tensors:
        expected = expected - {"threshold"} | {"log_threshold"}
    scaling = tensors.get("scaling_factor", tensors.get("finetuning_scaling_factor"))
    scaling_names = {"scaling_factor", "finetuning_scaling_factor"} & set(tensors)
    missing = expected - set(tensors)
    if missing:
        raise KeyError(f"tensors {sorted(missing)} missing from {WEIGHTS_FILE}")
    unknown = set(tensors) - expected - scaling_names
    if unknown:
        raise SAELensFormatError(
            f"{folder}: {WEIGHTS_FILE} holds tensors {sorted(unknown)} that a {arch} SAE does not "
            f"have (it has {sorted(expected)}); polysteer cannot tell what they do")
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    shapes.update({name: (d_sae,) for name in expected - set(shapes)})
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, cfg.json says {shape}")
    t = {name: value.float() for name, value in tensors.items()}  # float32 holds bf16/fp16 exactly
    W_enc, W_dec, b_dec = t["W_enc"], t["W_dec"], t["b_dec"]
    threshold = None
    if arch == "gated":
        # gate: (x'W + b_gate) > 0; magnitude: relu(x'(W e^r) + b_mag). With W' = W e^r, b' = b_mag,
        # pre' = e^r (x'W + b_gate) + (b_mag - e^r b_gate), so the gate is pre' > b_mag - e^r b_gate:
        # a jumprelu with that threshold (e^r > 0 keeps the inequality's direction).
        r = t["r_mag"].exp()
        W_enc, b_enc, threshold = W_enc * r, t["b_mag"], t["b_mag"] - r * t["b_gate"]
    else:
        b_enc = t["b_enc"]
        if arch == "jumprelu":
            threshold = t["threshold"] if "threshold" in t else t["log_threshold"].exp()
    if not flat.get("apply_b_dec_to_input", True):
        b_enc = b_enc + b_dec @ W_enc  # fold: (x - b_dec) @ W + b_enc + b_dec @ W == x @ W + b_enc
    if rescale:
        # SAELens: topk over (pre * |W_dec_i|), decode (f / |W_dec_i|) @ W_dec. Scaling a feature's
        # pre-activation by a positive number commutes with topk and relu, so fold it into the
        # weights; a dead row (norm 0, NaN in SAELens) reads and writes 0.
        n = W_dec.norm(dim=-1)
        W_enc, b_enc = W_enc * n, b_enc * n
        W_dec = torch.where(n[:, None] > 0, W_dec / n.clamp_min(1e-30)[:, None], 0.0)
    if scaling is not None:
        if tuple(scaling.shape) != (d_sae,):
            raise ValueError(f"scaling_factor has shape {tuple(scaling.shape)}, expected ({d_sae},)")
        if flat.get("finetuning_scaling_factor"):
            W_dec = W_dec * scaling.float()[:, None]  # SAELens decodes (f * s) @ W_dec
        elif not torch.equal(scaling, torch.ones_like(scaling)):
            raise _refuse(folder, "finetuning_scaling_factor", flat.get("finetuning_scaling_factor"),
                          f"{WEIGHTS_FILE} holds a scaling_factor that is not all ones",
                          "set finetuning_scaling_factor: true if the SAE decodes with it")
    elif flat.get("finetuning_scaling_factor"):
        raise KeyError(f"scaling_factor (finetuning_scaling_factor is true) missing from {WEIGHTS_FILE}")

    hook = flat.get("hook_name")
    site = site or side.get("site") or site_from_hook(hook)
    if not site:
        raise SAELensFormatError(
            f"{folder}: hook {hook!r} has no polysteer site equivalent; pass site=... "
            "(e.g. blocks.12.resid_post)")
    if model is None and side.get("model"):
        model = ModelFingerprint.from_json(side["model"])
    known = site_norm is not None or "site_norm" in side
    site_norm = float(site_norm if site_norm is not None else side.get("site_norm", 1.0))
    unread = sorted(set(flat) - _MATH_KEYS - _RECORDED_KEYS - _TRAINING_KEYS)
    if unread and not side:
        warnings.warn(f"{folder}: {CFG_FILE} keys {unread} are unknown to polysteer and were not "
                      "read (SAELens ignores keys it does not know too)", SAELensWarning, stacklevel=4)
    details = dict(side.get("details", {})) if side else {
        "source": "saelens", "model_name": flat.get("model_name"), "hook_name": hook,
        "architecture": arch, "dtype": flat.get("dtype"), "normalize_activations": norm,
        "rescale_acts_by_decoder_norm": rescale, "site_norm_known": known,
        "recorded": {key: flat[key] for key in sorted(_RECORDED_KEYS & set(flat))
                     if key != "model_name"},
        "unread_keys": unread}
    info = DictionaryInfo(model=model, site=site, site_norm=site_norm,
                          method=side.get("method", f"saelens-{arch}"), details=details)
    activation = "jumprelu" if threshold is not None else ARCHITECTURES[arch]
    sae = SparseAutoencoder(d_in, d_sae, info, activation, k, side.get("labels"))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.copy_(b_dec)
        if threshold is not None:
            sae.threshold.copy_(threshold)
        if "feature_scale" in side:
            sae.feature_scale.copy_(torch.tensor(side["feature_scale"], dtype=torch.float32))
    return sae


def export_saelens(sae: SparseAutoencoder, folder: str | os.PathLike) -> Path:
    """Write ``sae`` as an SAELens folder (``cfg.json`` + ``sae_weights.safetensors``), atomically.

    ``polysteer.json`` beside them keeps what SAELens has no field for (labels, feature scales,
    model fingerprint, site norm), so :func:`load_saelens` gives back exactly ``sae``.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"only sparse autoencoders export to SAELens, not {type(sae).__name__}")
    folder = Path(folder)
    arch = _EXPORT_ARCH[sae.activation]
    hook = hook_from_site(sae.info.site)
    layer = _SITE.match(sae.info.site)
    model_name = sae.info.model.name if sae.info.model else "unknown"
    cfg: dict[str, Any] = {
        "architecture": arch, "d_in": sae.d_in, "d_sae": sae.d_features, "dtype": "float32",
        "device": "cpu", "model_name": model_name, "hook_name": hook,
        "hook_layer": int(layer.group(1)) if layer else 0, "hook_head_index": None,
        "activation_fn_str": "topk" if arch == "topk" else "relu",
        "activation_fn_kwargs": {"k": sae.k} if arch == "topk" else {},
        "apply_b_dec_to_input": True, "finetuning_scaling_factor": False,
        "normalize_activations": "none", "reshape_activations": "none", "context_size": None,
        "prepend_bos": True, "dataset_path": "", "sae_lens_training_version": None,
        "model_from_pretrained_kwargs": {}, "neuronpedia_id": None,
        "metadata": {"model_name": model_name, "hook_name": hook, "hook_head_index": None},
    }
    if arch == "topk":
        cfg["k"] = sae.k
    tensors = {name: getattr(sae, name).detach().float().cpu()
               for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if arch == "jumprelu":
        tensors["threshold"] = sae.threshold.detach().float().cpu()
    side = {"format": "polysteer-saelens-sidecar", "labels": sae.labels, "site": sae.info.site,
            "site_norm": sae.info.site_norm, "method": sae.info.method, "details": sae.info.details,
            "model": sae.info.model.to_json() if sae.info.model else None,
            "feature_scale": sae.feature_scale.detach().float().cpu().tolist()}
    write_folder(folder, lambda tmp: (
        write_tensors(tmp / WEIGHTS_FILE, tensors),
        write_json(tmp / CFG_FILE, cfg),
        write_json(tmp / SIDECAR_FILE, side)))
    return folder


SAELENS_FORMAT = DictionaryFormat(detect=is_saelens, load=load_saelens, save=export_saelens)
"""SAELens folders (``cfg.json`` + ``sae_weights.safetensors``); register as ``saelens``."""
