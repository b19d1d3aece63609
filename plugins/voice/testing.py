"""Tiny random VITS voices for fast tests (no download, no espeak)."""

from __future__ import annotations

from typing import Any

TINY_PHONEMES = "_^$ ,.?!abdefhiklmnoprstuvwzæðŋɑɔəɛɪʊʌˈˌː"
"""The tiny voice's symbols; ``_`` pad, ``^`` start, ``$`` end, as in Piper voices."""


def tiny_vits_config(resblock_type: str = "2", stochastic: bool = True) -> Any:
    """A ``VitsConfig`` a few thousand parameters big, shaped like a Piper voice."""
    from transformers import VitsConfig

    return VitsConfig(
        vocab_size=len(TINY_PHONEMES), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        window_size=2, ffn_dim=32, ffn_kernel_size=3, flow_size=8, prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=2, wavenet_kernel_size=3, upsample_initial_channel=16,
        upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 2]] if resblock_type == "2" else [[1, 3, 5]],
        resblock_type=resblock_type, use_stochastic_duration_prediction=stochastic,
        duration_predictor_filter_channels=16, depth_separable_num_layers=2, sampling_rate=16000,
        spectrogram_bins=9, posterior_encoder_num_wavenet_layers=1)


def tiny_vits(seed: int = 0, **options: Any) -> Any:
    """A random inference-ready tiny VITS model (see :func:`tiny_vits_config`)."""
    import torch

    from polysteer.plugins.voice.vits import build_vits

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_vits(tiny_vits_config(**options))


def tiny_vits_adapter(seed: int = 0, **options: Any) -> Any:
    """A :class:`~polysteer.plugins.voice.adapter.VitsAdapter` over :func:`tiny_vits` with a
    phoneme map over :data:`TINY_PHONEMES`."""
    from polysteer.plugins.voice.adapter import VitsAdapter

    id_map = {s: [i] for i, s in enumerate(TINY_PHONEMES)}
    return VitsAdapter(tiny_vits(seed, **options), "tiny-vits", phoneme_id_map=id_map)
