"""The decoder-input SAE pipeline on a tiny random voice (fast; phoneme inputs, no espeak)."""

from __future__ import annotations

import math

import torch

from polysteer.plugins.voice.sae import (
    MEASURES,
    frame_measures,
    harvest_frames,
    label_by_effect,
)
from polysteer.plugins.voice.testing import tiny_vits_adapter
from polysteer.sae_training import TrainConfig, train_sae
from polysteer.search import correlations

PHRASES = [{"phonemes": "həlˈoʊ wˈɜːld."}, {"phonemes": "ðɪs ɪz ɐ tˈɛst, ɪzənt ɪt?"}]


def test_correlations_find_the_planted_feature_and_skip_nan_rows():
    g = torch.Generator().manual_seed(0)
    codes = torch.rand(200, 5, generator=g)
    values = 3 * codes[:, 2] + 0.01 * torch.randn(200, generator=g)
    values[:10] = math.nan
    codes[:, 4] = 0.0  # a feature that never fires
    r = correlations(codes, values)
    assert int(r.abs().argmax()) == 2 and r[2] > 0.99
    assert r[4] == 0


def testframe_measures_give_one_value_per_latent_frame():
    adapter = tiny_vits_adapter()
    speech = adapter.generate(PHRASES[0])
    frames = int(speech.frames[0])
    got = frame_measures(adapter, speech.rows()[0][None], frames)
    assert set(got) == set(MEASURES)
    assert all(v.shape == (frames,) for v in got.values())


def test_harvest_train_and_label_keeps_only_features_whose_effect_agrees():
    adapter = tiny_vits_adapter()
    acts, values = harvest_frames(adapter, PHRASES, seeds=(0,), progress=False)
    assert acts.shape[1] == 8 and all(len(v) == len(acts) for v in values.values())
    sae, _ = train_sae(acts, TrainConfig(d_features=16, k=4, batch_size=32, steps=30, log_every=10),
                       model=adapter.model_fingerprint, progress=False)
    sae.info.site = "decoder.input"
    evidence = label_by_effect(adapter, sae, acts, values, PHRASES[:1], per_measure=2, intensity=4.0)
    for label, item in evidence.items():
        assert sae.labels[item["feature"]] == label
        assert item["change"] * item["correlation"] > 0  # the effect has the correlation's sign
    unlabelled = [lab for lab in sae.labels if lab.startswith("feature ")]
    assert len(unlabelled) == 16 - len(evidence)
