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
