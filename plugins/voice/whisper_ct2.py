"""Read a CTranslate2 Whisper ``model.bin`` and map it onto transformers' Whisper weights.

CTranslate2 stores a model as one little-endian binary file (format version 6 here)::

    u32 binary_version, str spec_name, u32 spec_revision, u32 n_variables
    n_variables x (str name, u8 rank, rank x u32 dim, u8 dtype, u32 n_bytes, bytes data)
    u32 n_aliases, n_aliases x (str alias, str target)

where ``str`` is ``u16 length`` (counting a trailing NUL) followed by the UTF-8 bytes and the NUL.
dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. A quantised linear layer
stores ``weight`` as int8 (scale per output row) or int16 (one scale) next to ``weight_scale``,
with ``float = int / scale``. This reader was written from that description; it needs neither
the ``ctranslate2`` package nor numpy, and it never executes anything from the file.

The Whisper spec fuses projections: self-attention ``linear_0`` is ``[q; k; v]`` (k has no bias
in Whisper, so its third of the fused bias is zero), cross-attention ``linear_0`` is q and
``linear_1`` is ``[k; v]``; the output projection is the last linear. :func:`whisper_state_dict`
splits them into transformers' ``WhisperForConditionalGeneration`` names.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

import torch

from polysteer.errors import CorruptFileError

SUPPORTED_BINARY_VERSIONS = (3, 4, 5, 6)
_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16,
           5: torch.bfloat16}
_GELU = 3  # ctranslate2 Activation.GELU (erf form, as Whisper uses)


@dataclass
class CT2Model:
    """The parsed variables of a CTranslate2 model (aliases resolved, quantisation undone)."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    quantisation: dict[str, str]  # stored dtype of every quantised weight (e.g. "int8")


class _Reader:
    def __init__(self, data: bytes | memoryview, where: str):
        self.data, self.pos, self.where = memoryview(data), 0, where

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise CorruptFileError(f"{self.where} ends early (needs {n} bytes at offset {self.pos}, "
                                   f"has {len(self.data) - self.pos}): the file is truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.unpack("H")))
        if not raw.endswith(b"\0"):
            raise CorruptFileError(f"{self.where}: a string at offset {self.pos} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def _variable(reader: _Reader, binary_version: int) -> tuple[str, torch.Tensor]:
    name = reader.string()
    shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
    if binary_version >= 4:
        type_id = reader.unpack("B")
        if type_id not in _DTYPES:
            raise CorruptFileError(f"{reader.where}: variable {name!r} has unknown dtype id {type_id}; "
                                   "convert the model with a ctranslate2 release polysteer knows (<= 4.x)")
        dtype = _DTYPES[type_id]
    else:  # versions 3 and below store an item size; 4 bytes means float32
        dtype = {1: torch.int8, 2: torch.int16, 4: torch.float32}[reader.unpack("B")]
    raw = reader.take(reader.unpack("I"))
    tensor = torch.frombuffer(bytearray(raw), dtype=dtype) if len(raw) else torch.empty(0, dtype=dtype)
    if tensor.numel() != (n := int(torch.tensor(shape).prod()) if shape else 1):
        raise CorruptFileError(f"{reader.where}: variable {name!r} holds {tensor.numel()} values, its "
                               f"shape {shape} needs {n}")
    return name, tensor.reshape(shape)


def _dequantise(variables: dict[str, torch.Tensor]) -> dict[str, str]:
    """Turn every ``X`` with an ``X_scale`` into float32 ``X / scale`` (in place); report them."""
    done = {}
    for scale_name in [k for k in variables if k.endswith("_scale")]:
        name = scale_name[: -len("_scale")]
        weight, scale = variables.get(name), variables.pop(scale_name).float()
        if weight is None:
            raise CorruptFileError(f"model.bin has {scale_name!r} but no {name!r}")
        done[name] = str(weight.dtype).removeprefix("torch.")
        if not weight.is_floating_point():
            scale = scale.reshape(-1, *[1] * (weight.dim() - 1)) if scale.dim() else scale
            variables[name] = weight.float() / scale
    return done


def read_ct2(data: bytes | memoryview, where: str = "model.bin") -> CT2Model:
    """Parse the bytes of a CTranslate2 ``model.bin``; ``where`` names it in errors."""
    reader = _Reader(data, where)
    version = reader.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CorruptFileError(f"{where} has CTranslate2 binary version {version}; polysteer reads "
                               f"versions {SUPPORTED_BINARY_VERSIONS}")
    spec, revision = (reader.string(), reader.unpack("I")) if version >= 2 else ("", 1)
    variables = dict(_variable(reader, version) for _ in range(reader.unpack("I")))
    aliases = [(reader.string(), reader.string()) for _ in range(reader.unpack("I") if version >= 3 else 0)]
    if reader.pos != len(reader.data):
        raise CorruptFileError(f"{where} has {len(reader.data) - reader.pos} unread bytes at the end")
    quantisation = _dequantise(variables)
    for alias, target in aliases:  # after dequantising, so an alias of a quantised weight is float too
        if target not in variables:
            raise CorruptFileError(f"{where}: alias {alias!r} points at missing {target!r}")
        variables[alias] = variables[target]
    return CT2Model(spec, revision, variables, quantisation)


# --------------------------------------------------------------------------- Whisper mapping


def _scalar(model: CT2Model, name: str, default: int | None = None) -> int:
    value = model.variables.get(name)
    if value is None:
        if default is None:
            raise CorruptFileError(f"model.bin has no {name!r}: not a CTranslate2 Whisper model")
        return default
    return int(value.reshape(-1)[0])


def _layers(model: CT2Model, stack: str) -> int:
    found = {int(m.group(1)) for k in model.variables if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    if not found or found != set(range(len(found))):
        raise CorruptFileError(f"model.bin has no contiguous {stack} layers (found {sorted(found)})")
    return len(found)


def whisper_dimensions(model: CT2Model) -> dict[str, Any]:
    """transformers ``WhisperConfig`` sizes read off the weights (layers, heads, widths)."""
    if model.spec != "WhisperSpec":
        raise CorruptFileError(f"model.bin holds a CTranslate2 {model.spec or 'unnamed'} model, "
                               "not a WhisperSpec model")
    if _scalar(model, "decoder/activation", _GELU) != _GELU or not _scalar(model, "decoder/pre_norm", 1):
        raise CorruptFileError("model.bin's decoder is not pre-norm with GELU: not a Whisper layout")
    v = model.variables
    conv1 = v["encoder/conv1/weight"]
    return {
        "vocab_size": v["decoder/embeddings/weight"].shape[0],
        "d_model": v["decoder/embeddings/weight"].shape[1],
        "num_mel_bins": conv1.shape[1],
        "encoder_layers": _layers(model, "encoder"),
        "decoder_layers": _layers(model, "decoder"),
        "encoder_attention_heads": _scalar(model, "encoder/num_heads"),
        "decoder_attention_heads": _scalar(model, "decoder/num_heads"),
        "encoder_ffn_dim": v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        "decoder_ffn_dim": v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        "max_source_positions": v["encoder/position_encodings/encodings"].shape[0],
        "max_target_positions": v["decoder/position_encodings/encodings"].shape[0],
    }


def _linear(out: dict, v: dict, src: str, dst: str, bias: bool = True) -> None:
    out[f"{dst}.weight"] = v[f"{src}/weight"]
    if bias:
        out[f"{dst}.bias"] = v[f"{src}/bias"]


def _norm(out: dict, v: dict, src: str, dst: str) -> None:
    out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]


def _split(out: dict, v: dict, src: str, dsts: list[str], biased: list[bool]) -> None:
    """Split a fused projection into equal parts; a part without bias must have a zero bias."""
    weights = v[f"{src}/weight"].chunk(len(dsts))
    biases = v[f"{src}/bias"].chunk(len(dsts))
    for dst, weight, bias, has_bias in zip(dsts, weights, biases, biased, strict=True):
        out[f"{dst}.weight"] = weight
        if has_bias:
            out[f"{dst}.bias"] = bias
        elif bias.abs().max() > 0:
            raise CorruptFileError(f"model.bin: {src} has a non-zero bias for {dst}, which has none")


def _ffn_and_self_attention(out: dict, v: dict, src: str, dst: str) -> None:
    _split(out, v, f"{src}/self_attention/linear_0",
           [f"{dst}.self_attn.{p}_proj" for p in "qkv"], [True, False, True])
    _linear(out, v, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
    _norm(out, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    _linear(out, v, f"{src}/ffn/linear_0", f"{dst}.fc1")
    _linear(out, v, f"{src}/ffn/linear_1", f"{dst}.fc2")
    _norm(out, v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")


def whisper_state_dict(model: CT2Model, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The weights of ``model`` under ``WhisperForConditionalGeneration`` names, in ``dtype``.

    ``proj_out.weight`` is left out: Whisper ties it to the token embeddings (CTranslate2 stores
    it as an alias of them, which :func:`read_ct2` checks exists).
    """
    dims = whisper_dimensions(model)
    v, out = model.variables, {}
    enc, dec = "model.encoder", "model.decoder"
    for i in (1, 2):
        _linear(out, v, f"encoder/conv{i}", f"{enc}.conv{i}")
    out[f"{enc}.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    _norm(out, v, "encoder/layer_norm", f"{enc}.layer_norm")
    for i in range(dims["encoder_layers"]):
        _ffn_and_self_attention(out, v, f"encoder/layer_{i}", f"{enc}.layers.{i}")
    out[f"{dec}.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    out[f"{dec}.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    _norm(out, v, "decoder/layer_norm", f"{dec}.layer_norm")
    for i in range(dims["decoder_layers"]):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _ffn_and_self_attention(out, v, src, dst)
        _linear(out, v, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        _split(out, v, f"{src}/attention/linear_1",
               [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"], [False, True])
        _linear(out, v, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        _norm(out, v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
    projection = v.get("decoder/projection/weight")
    if projection is not None and not torch.equal(projection, v["decoder/embeddings/weight"]):
        raise CorruptFileError("model.bin's output projection differs from its embeddings; "
                               "polysteer's Whisper conversion expects them tied")
    return {k: t.to(dtype).contiguous() for k, t in out.items()}
