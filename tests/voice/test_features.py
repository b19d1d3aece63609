"""Voice feature building blocks on a tiny random voice (fast; no espeak)."""

from __future__ import annotations

import math

import torch

import polysteer as ps
from polysteer.plugins.voice.features import harvest, one_feature_style, per_phoneme, probe_direction
from polysteer.plugins.voice.testing import tiny_vits_adapter


def test_per_phoneme_averages_each_phonemes_frames_ignoring_nan():
    values = torch.tensor([1.0, 3.0, math.nan, 10.0, 20.0, math.nan])
    durations = torch.tensor([2.0, 1.0, 2.0, 1.0])
    out = per_phoneme(values, durations)
    # phoneme 0: frames 0-1; 1: frame 2 (unvoiced); 2: frames 3-4; 3: frame 5 (unvoiced)
    assert out[0].item() == 2.0 and out[2].item() == 15.0
    assert math.isnan(out[1].item()) and math.isnan(out[3].item())


def test_probe_direction_recovers_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    acts = [torch.randn(40, 8, generator=g) for _ in range(3)]
    true = torch.zeros(8)
    true[2] = 1.0
    values = [a @ true * 5 + 100 for a in acts]
    values[0][:5] = math.nan  # unvoiced rows are left out
    w, r = probe_direction(acts, values, ridge=1e-3)
    assert r > 0.99
    assert torch.nn.functional.cosine_similarity(w, true, dim=0) > 0.99


def test_harvest_captures_phoneme_rows_and_durations():
    adapter = tiny_vits_adapter()
    inputs = [{"phonemes": "həlˈoʊ"}, {"phonemes": "ðɪs ɪz ɐ tˈɛst"}]
    got = harvest(adapter, inputs, ["text_encoder.layers.1", "duration_predictor.input"],
                  progress=False, measure=False)
    for i, item in enumerate(inputs):
        phonemes = adapter.encode(item)[0].shape[1]
        assert got.acts["text_encoder.layers.1"][i].shape == (phonemes, 16)
        assert got.log_duration[i].shape == (phonemes,)


def test_a_duration_probe_lengthens_the_utterance():
    adapter = tiny_vits_adapter()
    site = "duration_predictor.input"
    inputs = {"phonemes": "ðɪs ɪz ɐ tˈɛst"}
    got = harvest(adapter, [inputs], [site], progress=False, measure=False)
    w, _ = probe_direction(got.acts[site], got.log_duration, ridge=1e-3)
    norm = ps.median_norm(got.acts[site][0][None])
    dictionary = ps.direction_set([w], ["slower"], site=site, site_norm=norm,
                                  model=adapter.model_fingerprint, method="linear-probe")
    plain = adapter.generate(inputs, noise_w=0.0)
    with ps.steer(adapter, one_feature_style(dictionary, "slower"), intensity=2.0):
        slower = adapter.generate(inputs, noise_w=0.0)
    assert (slower.frames >= plain.frames).all()
