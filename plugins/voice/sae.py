"""A sparse autoencoder on the voice's decoder input, with features labelled by acoustic effect.

Frames of ``decoder.input`` (the latent the vocoder turns into audio) are harvested from
synthesised sentences together with per-frame measurements of the audio they become (F0, spectral
centroid, level, spectral flatness). A TopK SAE is trained on the frames with the core trainer
(:func:`polysteer.workflows.train_sae`). Labels come in two stages:

1. *candidates*: for each measure, the features whose activation correlates most with it over the
   harvested frames;
2. *verified by effect* (core's label-by-effect, :mod:`polysteer.workflows.label_effect`, with this
   plugin's ``voice-acoustics`` measure): each candidate is added (``add``, intensity 0.5) to
   held-out speech and the measure is taken again; a candidate whose mean change has the sign of
   its correlation is labelled ``<measure>+`` (or ``-``) with the measured change recorded in
   ``info.details["labels"]``. Other features keep ``feature N``.

``python scripts/build_voice_sae.py [--out plugins/voice/shipped/dictionary]`` rebuilds the shipped
``joe-decoder-sae``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from polysteer import SparseAutoencoder, Style
from polysteer.steering import steer
from polysteer.workflows import EffectMeasure, TrainConfig, correlated_candidates, train_sae
from polysteer.workflows import label_by_effect as core_label_by_effect

SITE = "decoder.input"
MEASURES = ("pitch", "centroid", "level", "flatness")


def frame_measures(adapter: Any, wave: torch.Tensor, frames: int) -> dict[str, torch.Tensor]:
    """F0 (Hz), centroid (Hz), level (dBFS) and flatness per latent frame, ``(frames,)`` each
    (NaN where undefined: unvoiced or silent)."""
    from polysteer.plugins.voice.features import frame_measures

    pitch, centroid = frame_measures(adapter, wave, frames)
    hop = adapter.hop
    x = wave.reshape(-1)
    spec = torch.stft(x, 4 * hop, hop, window=torch.hann_window(4 * hop), return_complex=True).abs().square()
    spec = spec.T[:frames]  # (frames, bins), frame k centred on sample k * hop
    level = 10 * torch.log10(spec.mean(-1).clamp_min(1e-12))
    flatness = (spec + 1e-12).log().mean(-1).exp() / (spec.mean(-1) + 1e-12)
    silent = level < level.max() - 50
    pad = frames - len(level)
    nan = torch.full((max(pad, 0),), math.nan)
    level, flatness = (torch.cat([torch.where(silent, math.nan, v), nan]) for v in (level, flatness))
    return {"pitch": pitch, "centroid": centroid, "level": level, "flatness": flatness}


def harvest_frames(adapter: Any, sentences: Sequence[Any], seeds: Sequence[int] = (0, 1),
                   progress: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(frames (N, C), measures {name: (N,)})`` of ``decoder.input`` over every sentence x seed.

    The core harvest with renderer ``speech``, selector ``voice-frames`` and attribute
    ``frame-measure``, once per seed (seeds outer, sentences inner)."""
    from polysteer.plugins.voice.harvest import SpeechRenderer, frame_measure, voice_frames
    from polysteer.workflows import batched, collect

    acts, values = [], {m: [] for m in MEASURES}
    for seed in seeds:
        got = collect(adapter, batched(list(sentences), 1), [SITE], renderer=SpeechRenderer(seed=seed),
                      rows=voice_frames(), attributes={m: frame_measure(m) for m in MEASURES},
                      progress=progress, total_items=len(sentences), desc="harvesting frames")
        acts.append(got.rows[SITE])
        for name in MEASURES:
            values[name].append(got.values[SITE][name])
    return torch.cat(acts), {m: torch.cat(v) for m, v in values.items()}


def sentence_measures(adapter: Any, sentences: Sequence[Any], style: Style | None, intensity: float,
                      options: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Per sentence (each synthesised alone from ``options["seed"]``, default 0, under ``style``):
    the mean over its frames of every measure in :data:`MEASURES` (NaN where a measure is
    undefined in every frame) and its speaking ``rate`` (phonemes per second). Registered as the
    ``voice-acoustics`` effect measure."""
    values: dict[str, list[float]] = {m: [] for m in (*MEASURES, "rate")}
    for sentence in sentences:
        with steer(adapter, style, intensity=intensity):
            speech = adapter.generate(sentence, seed=options.get("seed", 0))
        got = frame_measures(adapter, speech.rows()[0][None], int(speech.frames[0]))
        for name, v in got.items():
            values[name].append(v.nanmean().item() if (~v.isnan()).any() else math.nan)
        values["rate"].append(float(adapter.speaking_rate(speech)[0]))
    return {name: torch.tensor(v) for name, v in values.items()}


VOICE_EFFECT = EffectMeasure(sentence_measures, "voice", "per sentence: mean F0, spectral centroid, level "
                             "and flatness of its frames, and its speaking rate")


def label_by_effect(adapter: Any, sae: SparseAutoencoder, acts: torch.Tensor,
                    values: dict[str, torch.Tensor], sentences: Sequence[Any], *, per_measure: int = 3,
                    intensity: float = 0.5) -> dict[str, dict[str, Any]]:
    """Label the SAE's features whose added direction moves a measure the way their activation
    correlates with it (core's :func:`~polysteer.workflows.label_by_effect` with the
    ``voice-acoustics`` measure; the first candidate of a feature that holds names it); returns
    the evidence per labelled feature and sets ``sae.labels``."""
    with torch.no_grad():
        codes = sae.encode(acts)
    found = correlated_candidates(codes, {m: values[m] for m in MEASURES}, per_measure)
    return core_label_by_effect(adapter, sae, found, list(sentences), VOICE_EFFECT, intensity=intensity,
                                prefer="first").evidence


def build_decoder_sae(adapter: Any, *, d_features: int = 512, k: int = 16, steps: int = 3000,
                      progress: bool = True) -> SparseAutoencoder:
    """Train and label the decoder-input SAE of ``adapter``'s voice (statements, questions and
    exclamations of the feature sentences, two noise seeds)."""
    from polysteer.plugins.voice.features import HELD_OUT, SENTENCES

    texts = [s[:-1] + end for s in SENTENCES for end in (".", "?", "!")]
    acts, values = harvest_frames(adapter, texts, progress=progress)
    config = TrainConfig(d_features=d_features, k=k, batch_size=256, steps=steps, lr=1e-3,
                         dead_after=20_000, log_every=100, eval_tokens=len(acts))
    sae, metrics = train_sae(acts, config, model=adapter.model_fingerprint, progress=progress,
                             details={"sentences": len(texts), "seeds": [0, 1], "frames": len(acts),
                                      "voice": adapter.name})
    sae.info.site = SITE
    evidence = label_by_effect(adapter, sae, acts, values, HELD_OUT[:2])
    sae.info.details["labels"] = evidence
    return sae
