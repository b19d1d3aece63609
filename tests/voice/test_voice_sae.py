"""The decoder-input SAE pipeline on a tiny random voice (fast; phoneme inputs, no espeak); the shipped
SAE's labels re-measured on the embedded voice (slow)."""

from __future__ import annotations

import math

import pytest
import torch

from polysteer.features.search import correlations
from polysteer.plugins.voice.sae import (
    MEASURES,
    frame_measures,
    harvest_frames,
    label_by_effect,
)
from polysteer.plugins.voice.testing import tiny_vits_adapter
from polysteer.workflows.sae_training import TrainConfig, train_sae

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


def test_core_label_by_effect_with_the_voice_measure_labels_a_planted_feature(plugin_manager):
    import polysteer as ps
    from polysteer.plugins.voice.features import harvest, probe_direction
    from polysteer.workflows.label_effect import Candidate, label_by_effect

    adapter = tiny_vits_adapter()
    site = "duration_predictor.input"
    got = harvest(adapter, PHRASES, [site], progress=False, measure=False)
    w, _ = probe_direction(got.acts[site], got.log_duration, ridge=1e-3)  # longer phonemes
    norm = ps.median_norm(torch.cat(got.acts[site])[None])
    d = ps.direction_set([w, -w], ["slower", "faster"], site=site, site_norm=norm,
                         model=adapter.model_fingerprint, method="linear-probe")
    found = [Candidate(0, "rate", -1.0), Candidate(1, "rate", -1.0)]  # both claim to slow speech down
    result = label_by_effect(adapter, d, found, PHRASES, "voice-acoustics", intensity=1.0)
    assert d.labels == ["rate- (0)", "faster"]
    assert result.evidence["rate- (0)"]["change"] < 0 and not result.outcomes[1].holds
    assert set(result.evidence["rate- (0)"]["side_effects"]) <= {*MEASURES}


@pytest.mark.slow
def test_the_shipped_decoder_sae_labels_hold_through_core_label_by_effect():
    """Every shipped ``joe-decoder-sae`` label, measured again by core's workflow with the registered
    ``voice-acoustics`` measure on the sentences it was built with, holds with the recorded change."""
    import polysteer as ps
    from polysteer.plugins.voice.adapter import VitsAdapter
    from polysteer.plugins.voice.features import HELD_OUT
    from polysteer.workflows.label_effect import Candidate, measure_effects

    torch.set_num_threads(1)
    adapter = VitsAdapter.load("joe")
    sae = ps.resolve_dictionary("joe-decoder-sae")
    evidence = sae.info.details["labels"]
    found = [Candidate(e["feature"], label.rsplit(" (", 1)[0][:-1], e["correlation"])
             for label, e in evidence.items()]
    outcomes = measure_effects(adapter, sae, found, list(HELD_OUT[:2]), "voice-acoustics", intensity=0.5)
    for (label, record), outcome in zip(evidence.items(), outcomes, strict=True):
        assert outcome.holds, (label, outcome)
        assert outcome.change == pytest.approx(record["change"], rel=0.05), (label, outcome.change, record)
