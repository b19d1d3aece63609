"""Calibration on a voice model: prosody profile and WER judge, on a tiny VITS and a tiny Whisper."""

from __future__ import annotations

import math

import torch

from polysteer.features.concepts import direction_set, median_norm
from polysteer.plugins.voice.evaluation import WER_MARGIN, VoiceCalibrationJudge
from polysteer.plugins.voice.testing import tiny_vits_adapter
from polysteer.plugins.voice.whisper_testing import tiny_whisper_adapter
from polysteer.steering.runtime import steer
from polysteer.steering.style import Component, Style
from polysteer.workflows import calibrate, make_judge

SITE = "duration_predictor.input"
PHONEMES = {"phonemes": ["hɛloʊ wɜld", "ðə kæt sæt"]}


def test_voice_calibration_mechanism_on_a_tiny_vits(plugin_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path))
    voice = tiny_vits_adapter()
    whisper = tiny_whisper_adapter()
    with steer(voice, None, capture=[SITE]) as run:
        voice.generate(PHONEMES, seed=0)
    acts = run.captured(SITE)
    vector = torch.randn(acts.shape[-1], generator=torch.Generator().manual_seed(0))
    d = direction_set([vector], ["push"], site=SITE, site_norm=median_norm(acts),
                      model=voice.model_fingerprint, method="test")
    style = Style(name="push", components=[Component("push", dictionary=d, feature="push")])
    spec = {"name": "slow", "voice": {"profile": {"rate": -1, "pitch": 1}}}
    assert isinstance(make_judge(voice, style, spec), VoiceCalibrationJudge)

    def asr(waves, rate):  # the tiny Whisper's transcripts of the real tiny-VITS audio
        return whisper.transcribe(list(waves), sample_rate=rate, max_new_tokens=4)

    judge = VoiceCalibrationJudge(voice, spec, sentences=["hello world", "the cat sat"],
                                  inputs=PHONEMES, asr=asr)
    cal = calibrate(voice, style, judge=judge, grid=[1.0, 4.0], stop_after=0, progress=False)
    base, one, four = cal.points
    assert base["score"] == 0.0 and cal.bound == base["coherence"] + WER_MARGIN
    assert math.isfinite(one["rate_mean"]) and math.isfinite(four["score"])
    assert four["rate_mean"] != base["rate_mean"]  # steering the duration predictor moved the rate
    assert cal.modality == "voice" and cal.high in (1.0, 4.0)
