"""A tiny random Whisper (2+2 layers, width 32, 1 s window) with an offline byte-level tokenizer,
for fast tests: nothing is downloaded."""

from __future__ import annotations

from typing import Any

SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|startofprev|>", "<|nocaptions|>",
            "<|notimestamps|>")
TIMESTAMPS = 8


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte, the alphabet of a byte-level BPE."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b], extra = chr(256 + extra), extra + 1
    return [chars[b] for b in range(256)]


def tiny_whisper_processor() -> Any:
    """A ``WhisperProcessor``: byte-level tokenizer (256 bytes + Whisper's special tokens) and an
    80-mel feature extractor with a 1 s window (100 mel frames)."""
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    vocab = {c: i for i, c in enumerate(_byte_chars())}
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", special=False) for i in range(TIMESTAMPS)])
    tokenizer.pad_token = "<|endoftext|>"
    features = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, chunk_length=1)
    return WhisperProcessor(feature_extractor=features, tokenizer=tokenizer)


def tiny_whisper_model(seed: int = 0) -> Any:
    """A random ``WhisperForConditionalGeneration`` matching :func:`tiny_whisper_processor`.

    The end-of-text token is suppressed, so greedy generation always runs ``max_new_tokens``.
    """
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    eot, sot, prev, _, no_ts = range(256, 256 + len(SPECIALS))
    config = WhisperConfig(vocab_size=256 + len(SPECIALS) + TIMESTAMPS, num_mel_bins=80, d_model=32,
                           encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                           max_source_positions=50, max_target_positions=64, pad_token_id=eot,
                           bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        no_timestamps_token_id=no_ts, prev_sot_token_id=prev, is_multilingual=False,
        suppress_tokens=[eot], begin_suppress_tokens=[], return_timestamps=False)
    return model


def tiny_whisper_adapter(seed: int = 0) -> Any:
    """A :class:`WhisperAdapter` over :func:`tiny_whisper_model` and :func:`tiny_whisper_processor`."""
    from polysteer.plugins.voice.whisper_adapter import WhisperAdapter

    return WhisperAdapter(tiny_whisper_model(seed), tiny_whisper_processor(), "tiny-whisper")


def tiny_waveforms(samples: int = 2, seconds: float = 0.5, seed: int = 0) -> Any:
    """Noisy chirps ``(samples, T)`` at 16 kHz: deterministic, different per row."""
    import torch

    t = torch.arange(int(seconds * 16000)) / 16000
    g = torch.Generator().manual_seed(seed)
    rows = [0.3 * torch.sin(2 * torch.pi * (200 + 150 * i) * t * (1 + t))
            + 0.02 * torch.randn(t.shape, generator=g) for i in range(samples)]
    return torch.stack(rows)


def _ct2_string(text: str) -> bytes:
    import struct

    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _ct2_variables(model: Any) -> dict[str, Any]:
    """A Whisper's weights under CTranslate2 WhisperSpec names, projections fused as it fuses them."""
    import torch

    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {}

    def linear(src: str, dst: str) -> None:
        out[f"{dst}/weight"], out[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def norm(src: str, dst: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(src: str, parts: str, dst: str) -> None:
        out[f"{dst}/weight"] = torch.cat([sd[f"{src}.{p}_proj.weight"] for p in parts])
        zero = torch.zeros(sd[f"{src}.q_proj.bias"].shape)  # Whisper's k projections have no bias
        out[f"{dst}/bias"] = torch.cat([sd.get(f"{src}.{p}_proj.bias", zero) for p in parts])

    def layer(src: str, dst: str) -> None:
        fused(f"{src}.self_attn", "qkv", f"{dst}/self_attention/linear_0")
        linear(f"{src}.self_attn.out_proj", f"{dst}/self_attention/linear_1")
        norm(f"{src}.self_attn_layer_norm", f"{dst}/self_attention/layer_norm")
        linear(f"{src}.fc1", f"{dst}/ffn/linear_0")
        linear(f"{src}.fc2", f"{dst}/ffn/linear_1")
        norm(f"{src}.final_layer_norm", f"{dst}/ffn/layer_norm")

    config = model.config
    for i in (1, 2):
        linear(f"model.encoder.conv{i}", f"encoder/conv{i}")
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    out["encoder/num_heads"] = torch.tensor(config.encoder_attention_heads, dtype=torch.int16)
    for i in range(config.encoder_layers):
        layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    out["decoder/num_heads"] = torch.tensor(config.decoder_attention_heads, dtype=torch.int16)
    out["decoder/activation"] = torch.tensor(3, dtype=torch.int8)
    out["decoder/pre_norm"] = torch.tensor(1, dtype=torch.int8)
    for i in range(config.decoder_layers):
        src, dst = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        layer(src, dst)
        linear(f"{src}.encoder_attn.q_proj", f"{dst}/attention/linear_0")
        fused(f"{src}.encoder_attn", "kv", f"{dst}/attention/linear_1")
        linear(f"{src}.encoder_attn.out_proj", f"{dst}/attention/linear_2")
        norm(f"{src}.encoder_attn_layer_norm", f"{dst}/attention/layer_norm")
    return out


def _quantise(variables: dict[str, Any], quantization: str | None) -> dict[str, Any]:
    """CTranslate2's weight quantisation of linear and embedding weights: int8 with a scale per
    output row, int16 with one scale, or float16."""
    import torch

    out = {}
    for name, value in variables.items():
        quantisable = name.endswith("/weight") and ("/linear_" in name or "/embeddings/" in name)
        if quantization in ("int8", "int16") and quantisable:
            amax = value.abs().amax(dim=1) if quantization == "int8" else value.abs().max()
            scale = (127.0 if quantization == "int8" else 2.0 ** 10) / amax
            dtype = torch.int8 if quantization == "int8" else torch.int16
            out[name] = (value * (scale[:, None] if scale.dim() else scale)).round().to(dtype)
            out[f"{name}_scale"] = scale.float()
        elif quantization == "float16" and value.is_floating_point():
            out[name] = value.half()
        else:
            out[name] = value
    return out


def ct2_whisper_bytes(model: Any, quantization: str | None = None) -> bytes:
    """``model`` written as a CTranslate2 ``model.bin`` (binary version 6, WhisperSpec revision 3),
    optionally quantised (``int8``, ``int16``, ``float16``): a test fixture for the reader."""
    import struct

    import torch

    type_ids = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4,
                torch.bfloat16: 5}
    variables = _quantise(_ct2_variables(model), quantization)
    blob = [struct.pack("<I", 6), _ct2_string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name, value in sorted(variables.items()):
        data = value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        shape = struct.pack(f"<B{value.dim()}I", value.dim(), *value.shape)
        blob += [_ct2_string(name), shape, struct.pack("<BI", type_ids[value.dtype], len(data)), data]
    blob += [struct.pack("<I", 1), _ct2_string("decoder/projection/weight"),
             _ct2_string("decoder/embeddings/weight")]
    return b"".join(blob)


def ct2_whisper_files(model: Any, processor: Any, quantization: str | None = None) -> dict[str, bytes]:
    """The three files of a CTranslate2 Whisper folder for ``model`` and ``processor``."""
    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        processor.tokenizer.save_pretrained(tmp)
        tokenizer_json = (Path(tmp) / "tokenizer.json").read_bytes()
    generation = model.generation_config
    config = {"suppress_ids": list(generation.suppress_tokens or []),
              "suppress_ids_begin": list(generation.begin_suppress_tokens or []),
              "lang_ids": [], "alignment_heads": [[1, 0]]}
    return {"model.bin": ct2_whisper_bytes(model, quantization),
            "config.json": json.dumps(config).encode(), "tokenizer.json": tokenizer_json}
