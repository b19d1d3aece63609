"""Folder formats of converted models: written so every supported transformers version reads them alike.

transformers changes how it writes a model folder between versions: 5.x saves the rotary settings
as ``rope_parameters`` (4.x ignores that key and falls back to its default ``rope_theta``, so every
activation changes silently) and names its tokenizer class ``TokenizersBackend`` (4.x cannot load
it). A converted folder is therefore rewritten into the portable form (:func:`make_portable`):

- ``config.json`` holds the rotary settings as ``rope_theta`` and ``rope_scaling`` (the keys every
  version reads; 5.x converts them itself) and the dtype under both ``dtype`` and ``torch_dtype``;
- ``tokenizer_config.json`` names ``PreTrainedTokenizerFast`` (known to every version, read from
  ``tokenizer.json``) instead of ``TokenizersBackend`` and holds the chat template inline as well
  as in ``chat_template.jinja``;
- a feature extractor that 5.x nests in ``processor_config.json`` is also written as
  ``preprocessor_config.json``, the file 4.x reads.

The manifest then records a *read-back* (:func:`readback`): the numbers the writing version read
from the finished folder (architecture sizes, rotary settings, special token ids, the token ids of
a probe text, the chat template's hash). :func:`check_readback` compares them with what the
running version reads and refuses the folder, naming each difference and the version that wrote
it, rather than let it load with different numbers.
"""

from __future__ import annotations

import hashlib
import math
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from polysteer.errors import PolysteerError
from polysteer.io.fileio import read_json, write_json

FOLDER_FORMAT = 2
"""Version of the converted-folder layout; 1 was transformers' own ``save_pretrained`` output."""

PROBE_TEXT = ("Hello, world! <|im_start|>user\nSteer the model: héllo  wörld\t123 4567 "
              "— naïve café ☕ 你好 <|endoftext|> end")
"""Text tokenised at write and at read time; equal ids mean the tokenizer reads back alike."""

_CONFIG_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps",
    "max_position_embeddings", "tie_word_embeddings", "attention_bias", "mlp_bias",
    "bos_token_id", "eos_token_id", "pad_token_id",
    # encoder-decoder and VITS models (Whisper, Piper)
    "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "num_mel_bins",
    "max_source_positions", "max_target_positions", "scale_embedding", "decoder_start_token_id",
    "layer_norm_eps", "flow_size", "sampling_rate", "spectrogram_bins", "upsample_rates",
    "upsample_kernel_sizes", "resblock_kernel_sizes", "resblock_dilation_sizes", "noise_scale",
    "noise_scale_duration", "speaking_rate", "use_stochastic_duration_prediction",
    "num_speakers", "speaker_embedding_size", "ffn_dim", "ffn_kernel_size", "window_size",
)


class FolderFormatError(PolysteerError, ValueError):
    """A converted folder that the running transformers would read with different numbers."""


def transformers_version() -> str:
    """The installed transformers version, or ``"none"``."""
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return "none"


def _legacy_rope(parameters: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
    """``(rope_theta, rope_scaling)`` from a 5.x ``rope_parameters`` dict."""
    rest = dict(parameters)
    theta = rest.pop("rope_theta", None)
    rest.pop("partial_rotary_factor", None)
    if rest.get("rope_type", "default") == "default" and len(rest) <= 1:
        return theta, None
    rest.setdefault("rope_type", "default")
    rest["type"] = rest["rope_type"]  # the key 4.x's early Llama configs read
    return theta, rest


def portable_config(data: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` content rewritten into the keys every supported version reads alike."""
    out = dict(data)
    parameters = out.pop("rope_parameters", None)
    if isinstance(parameters, dict):
        if parameters and all(isinstance(v, dict) for v in parameters.values()):
            raise FolderFormatError(
                "this config has per-layer-type rope_parameters, which transformers 4.x cannot "
                "read; polysteer cannot write it in a portable form")
        theta, scaling = _legacy_rope(parameters)
        if theta is not None:
            out["rope_theta"] = theta
        if "partial_rotary_factor" in parameters:
            out["partial_rotary_factor"] = parameters["partial_rotary_factor"]
        out["rope_scaling"] = scaling
    if "dtype" in out and "torch_dtype" not in out:
        out["torch_dtype"] = out["dtype"]
    return out


def portable_tokenizer_config(data: dict[str, Any], chat_template: str | None) -> dict[str, Any]:
    """``tokenizer_config.json`` content every supported version loads as the same tokenizer."""
    out = dict(data)
    if out.get("tokenizer_class") in ("TokenizersBackend", None):
        out["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("backend", "is_local", "local_files_only"):  # 5.x run-time state, not settings
        out.pop(key, None)
    if chat_template is not None and "chat_template" not in out:
        out["chat_template"] = chat_template
    return out


def make_portable(folder: str | Path) -> None:
    """Rewrite a freshly saved model folder's config and tokenizer files in the portable form."""
    folder = Path(folder)
    config = folder / "config.json"
    if config.is_file():
        write_json(config, portable_config(read_json(config)))
    processor = folder / "processor_config.json"
    preprocessor = folder / "preprocessor_config.json"
    if processor.is_file() and not preprocessor.is_file():
        # 5.x nests the feature extractor in processor_config.json; 4.x reads only this file
        nested = read_json(processor).get("feature_extractor")
        if isinstance(nested, dict):
            extra = {k: v for k, v in read_json(processor).items() if k == "processor_class"}
            write_json(preprocessor, {**nested, **extra})
    tokenizer = folder / "tokenizer_config.json"
    if tokenizer.is_file() and (folder / "tokenizer.json").is_file():
        jinja = folder / "chat_template.jinja"
        template = jinja.read_text(encoding="utf-8") if jinja.is_file() else None
        write_json(tokenizer, portable_tokenizer_config(read_json(tokenizer), template))


def rope_settings(config: Any) -> dict[str, Any] | None:
    """The rotary settings a loaded config will use, the same dict on 4.x and 5.x (None: no rope)."""
    parameters = getattr(config, "rope_parameters", None)
    if isinstance(parameters, dict) and "rope_theta" in parameters:
        out = dict(parameters)
    elif getattr(config, "rope_theta", None) is not None:
        out = dict(getattr(config, "rope_scaling", None) or {})
        out["rope_theta"] = config.rope_theta
    else:
        return None
    out.pop("type", None)
    out.setdefault("rope_type", "default")
    return {k: out[k] for k in sorted(out)}


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.9g}") if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def config_readback(config: Any) -> dict[str, Any]:
    """The architecture numbers a loaded config holds (only fields it has)."""
    out = {name: _plain(getattr(config, name)) for name in _CONFIG_FIELDS if hasattr(config, name)}
    rope = rope_settings(config)
    if rope is not None:
        out["rope"] = _plain(rope)
    return out


def tokenizer_readback(tokenizer: Any) -> dict[str, Any]:
    """What a loaded tokenizer does: special token ids, probe ids, size, chat template hash."""
    template = getattr(tokenizer, "chat_template", None)
    return {
        "probe_ids": [int(i) for i in tokenizer(PROBE_TEXT)["input_ids"]],
        "size": len(tokenizer),
        **{f"{role}_token_id": getattr(tokenizer, f"{role}_token_id", None)
           for role in ("bos", "eos", "unk")},
        "chat_template_sha256": (hashlib.sha256(template.encode()).hexdigest()
                                 if isinstance(template, str) else None),
    }


def readback(config: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """The read-back recorded in a manifest: config numbers and tokenizer behaviour."""
    out: dict[str, Any] = {}
    if config is not None:
        out["config"] = config_readback(config)
    if tokenizer is not None:
        out["tokenizer"] = tokenizer_readback(tokenizer)
    return out


def _differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """``section.field`` differences for every field the writer recorded (fields only a newer
    reader has are not compared; a recorded field the reader lacks reads as None)."""
    problems = []
    for section, fields in sorted(expected.items()):
        read = actual.get(section) or {}
        for name, value in sorted(fields.items()):
            got = read.get(name)
            if got == value:
                continue
            if isinstance(value, list) and isinstance(got, list) and len(value) > 8:
                problems.append(f"{section}.{name} differ ({len(value)} ids written, {len(got)} read)")
            else:
                problems.append(f"{section}.{name} was {value!r} when written, reads as {got!r}")
    return problems


def manifest_of(folder: str | Path) -> dict[str, Any] | None:
    """The polysteer manifest (``polysteer-model.json``) of a converted folder; None for others."""
    path = Path(folder) / "polysteer-model.json"
    if not path.is_file():
        return None
    manifest = read_json(path)
    return manifest if isinstance(manifest, dict) and "files" in manifest else None


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """``dtype=`` for transformers >= 4.56, ``torch_dtype=`` before (older versions take an unknown
    ``dtype=`` as a config attribute and silently load in float32)."""
    version = transformers_version()
    new = version == "none" or tuple(int(p) for p in re.findall(r"\d+", version)[:2]) >= (4, 56)
    return {"dtype" if new else "torch_dtype": dtype}


def folder_format_problem(manifest: dict[str, Any]) -> str | None:
    """Why a manifest's folder is not in the current portable format (None: it is)."""
    if manifest.get("folder_format") != FOLDER_FORMAT or "readback" not in manifest:
        return (f"it was written in folder format {manifest.get('folder_format', 1)} (transformers "
                f"{manifest.get('converted_with', {}).get('transformers', 'unknown')}'s own layout), "
                f"which other transformers versions may read differently; polysteer now writes "
                f"format {FOLDER_FORMAT}")
    return None


def check_readback(manifest: dict[str, Any], *, name: str, folder: str | Path, fix: str,
                   config: Any = None, tokenizer: Any = None) -> None:
    """Refuse a converted folder that the running transformers reads differently from its writer.

    ``config``/``tokenizer`` are what the running version loaded from ``folder``; they are compared
    with the manifest's read-back. Raises :class:`FolderFormatError` naming the differences, the
    writing and the running version, and ``fix``.
    """
    written = manifest.get("converted_with", {}).get("transformers", "unknown")
    stale = folder_format_problem(manifest)
    if stale:
        raise FolderFormatError(f"the converted {name} in {folder} cannot be used: {stale}; {fix}")
    expected = manifest["readback"]
    actual = readback(config if "config" in expected else None,
                      tokenizer if "tokenizer" in expected else None)
    problems = _differences(expected, actual)
    if problems:
        shown = "; ".join(problems[:4])
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise FolderFormatError(
            f"the converted {name} in {folder} was written by transformers {written} and this "
            f"transformers {transformers_version()} reads it with different numbers: {shown}{more}. "
            f"It is refused rather than run differently; {fix}")
