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
========================  ==================================================

What a SAELens folder does not carry, and what polysteer does about it:

* **model fingerprint**: SAELens records only a model *name*, so the loaded dictionary has
  ``info.model = None`` (usable on any model with the right width) unless you pass ``model=``;
* **site**: translated from ``hook_name`` where it names a residual/attention/MLP output
  (``blocks.12.hook_resid_post`` -> ``blocks.12.resid_post``); otherwise pass ``site=``;
* **site norm**: unknown; pass ``site_norm=`` (the median token norm at the site), else 1.0 is
  used and ``info.details["site_norm_known"]`` is ``False``.

``apply_b_dec_to_input: false`` (the encoder does not subtract ``b_dec``) is folded into the
encoder bias, ``b_enc' = b_enc + b_dec @ W_enc``, so polysteer's ``(x - b_dec) @ W_enc + b_enc``
computes the same pre-activations. ``normalize_activations`` ``none`` and
``expected_average_only_in`` (a training-time scale that SAELens folds into the weights and does
not apply at inference) load; ``constant_norm_rescale`` and ``layer_norm`` rescale each token at
run time, which a linear dictionary cannot reproduce, and are refused.

:func:`export_saelens` writes the two SAELens files plus ``polysteer.json`` (labels, feature
scales, the model fingerprint, site and site norm) so that exporting and loading again gives back
exactly the same dictionary; SAELens ignores the extra file.
"""

from __future__ import annotations

import os
import re
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

ARCHITECTURES = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk"}
_EXPORT_ARCH = {v: k for k, v in ARCHITECTURES.items()}
_NORMALIZATIONS_OK = (None, "none", "expected_average_only_in")
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


def _meta(cfg: dict, key: str) -> Any:
    """A cfg value at the top level (SAELens <= 5) or under ``metadata`` (SAELens 6)."""
    if key in cfg:
        return cfg[key]
    meta = cfg.get("metadata")
    return meta.get(key) if isinstance(meta, dict) else None


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
    arch = cfg.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise SAELensFormatError(
            f"{folder}: SAELens architecture {arch!r} is not supported; polysteer loads "
            f"{', '.join(ARCHITECTURES)}")
    norm = cfg.get("normalize_activations")
    if norm not in _NORMALIZATIONS_OK:
        raise SAELensFormatError(
            f"{folder}: normalize_activations={norm!r} rescales every token at run time, which a "
            "polysteer dictionary cannot reproduce; use an SAE trained with 'none' or "
            "'expected_average_only_in'")
    if cfg.get("finetuning_scaling_factor") or "scaling_factor" in tensors:
        raise SAELensFormatError(f"{folder}: SAEs with a finetuning scaling factor are not supported; "
                                 "fold it into W_dec first")
    if _meta(cfg, "hook_head_index") is not None:
        raise SAELensFormatError(f"{folder}: SAEs on a single attention head (hook_head_index) are "
                                 "not supported")
    activation = ARCHITECTURES[arch]
    k = None
    if activation == "topk":
        kwargs = cfg.get("activation_fn_kwargs") or {}
        k = cfg.get("k", kwargs.get("k"))
        if k is None:
            raise KeyError("k (a topk SAE needs activation_fn_kwargs.k or k)")
        k = int(k)
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(tensors)
    if activation == "jumprelu" and "threshold" not in tensors and "log_threshold" not in tensors:
        missing.add("threshold")
    if missing:
        raise KeyError(f"tensors {sorted(missing)} missing from {WEIGHTS_FILE}")
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, cfg.json says {shape}")
    W_enc, b_enc = tensors["W_enc"].float(), tensors["b_enc"].float()
    b_dec = tensors["b_dec"].float()
    if not cfg.get("apply_b_dec_to_input", True):
        b_enc = b_enc + b_dec @ W_enc  # fold: (x - b_dec) @ W + b_enc + b_dec @ W == x @ W + b_enc
    hook = _meta(cfg, "hook_name")
    site = site or side.get("site") or site_from_hook(hook)
    if not site:
        raise SAELensFormatError(
            f"{folder}: hook {hook!r} has no polysteer site equivalent; pass site=... "
            "(e.g. blocks.12.resid_post)")
    if model is None and side.get("model"):
        model = ModelFingerprint.from_json(side["model"])
    known = site_norm is not None or "site_norm" in side
    site_norm = float(site_norm if site_norm is not None else side.get("site_norm", 1.0))
    details = dict(side.get("details", {})) if side else {
        "source": "saelens", "model_name": _meta(cfg, "model_name"), "hook_name": hook,
        "normalize_activations": norm, "site_norm_known": known}
    info = DictionaryInfo(model=model, site=site, site_norm=site_norm,
                          method=side.get("method", f"saelens-{arch}"), details=details)
    sae = SparseAutoencoder(d_in, d_sae, info, activation, k, side.get("labels"))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(tensors["W_dec"].float())
        sae.b_dec.copy_(b_dec)
        if activation == "jumprelu":
            threshold = tensors["threshold"] if "threshold" in tensors else tensors["log_threshold"].exp()
            if tuple(threshold.shape) != (d_sae,):
                raise ValueError(f"threshold has shape {tuple(threshold.shape)}, expected ({d_sae},)")
            sae.threshold.copy_(threshold.float())
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
