"""A sparse autoencoder on the voice's decoder input, with features labelled by acoustic effect.

Frames of ``decoder.input`` (the latent the vocoder turns into audio) are harvested from
synthesised sentences together with per-frame measurements of the audio they become (F0, spectral
centroid, level, spectral flatness). A TopK SAE is trained on the frames with the core trainer
(:func:`polysteer.sae_training.train_sae`). Labels come in two stages:

1. *candidates*: for each measure, the features whose activation correlates most with it over the
   harvested frames;
2. *verified by effect*: each candidate is added (``add``, intensity 0.5, positions where it
   fires most) to held-out speech and the measure is taken again; a candidate whose effect has the
   sign of its correlation is labelled ``<measure>+`` (or ``-``) with the measured change recorded
   in ``info.details["labels"]``. Other features keep ``feature N``.

``python -m polysteer.plugins.voice.sae [--out configs/dictionary]`` rebuilds the shipped
``joe-decoder-sae``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from polysteer import SparseAutoencoder, Style
from polysteer.runtime import steer
from polysteer.sae_training import TrainConfig, train_sae
from polysteer.search import correlations

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
    """``(frames (N, C), measures {name: (N,)})`` of ``decoder.input`` over every sentence x seed."""
    from tqdm import tqdm

    acts, values = [], {m: [] for m in MEASURES}
    jobs = [(s, seed) for seed in seeds for s in sentences]
    for sentence, seed in tqdm(jobs, desc="harvesting frames", disable=not progress, leave=False):
        with steer(adapter, None, capture=[SITE]) as run:
            speech = adapter.generate(sentence, seed=seed)
        frames = int(speech.frames[0])
        acts.append(run.captured(SITE)[0, :frames])
        for name, v in frame_measures(adapter, speech.rows()[0][None], frames).items():
            values[name].append(v)
    return torch.cat(acts), {m: torch.cat(v) for m, v in values.items()}


def _effect(adapter: Any, sae: SparseAutoencoder, feature: int, measure: str,
            sentences: Sequence[str], intensity: float) -> float:
    """Mean change of ``measure`` over held-out sentences when the feature is added."""
    style = Style.from_dict({"name": "probe", "components": [
        {"dictionary": "in-memory", "feature": feature, "intervention": "add"}]})
    style.components[0].dictionary = sae
    changes = []
    for sentence in sentences:
        got = []
        for w in (0.0, intensity):
            with steer(adapter, style, intensity=w):
                speech = adapter.generate(sentence, seed=0)
            values = frame_measures(adapter, speech.rows()[0][None], int(speech.frames[0]))[measure]
            got.append(values.nanmean().item() if (~values.isnan()).any() else math.nan)
        if all(math.isfinite(g) for g in got):
            changes.append(got[1] - got[0])
    return sum(changes) / len(changes) if changes else math.nan


def label_by_effect(adapter: Any, sae: SparseAutoencoder, acts: torch.Tensor,
                    values: dict[str, torch.Tensor], sentences: Sequence[str], *, per_measure: int = 3,
                    intensity: float = 0.5) -> dict[str, dict[str, float]]:
    """Label the SAE's features whose added direction moves a measure the way their activation
    correlates with it; returns the evidence per labelled feature and sets ``sae.labels``."""
    with torch.no_grad():
        codes = sae.encode(acts)
    evidence: dict[str, dict[str, float]] = {}
    labels = list(sae.labels)
    for measure in MEASURES:
        r = correlations(codes, values[measure])
        for feature in r.abs().argsort(descending=True)[:per_measure].tolist():
            sign = 1.0 if r[feature] > 0 else -1.0
            change = _effect(adapter, sae, feature, measure, sentences, intensity * sign)
            if math.isfinite(change) and change * sign > 0 and labels[feature].startswith("feature "):
                labels[feature] = f"{measure}{'+' if sign > 0 else '-'} ({feature})"
                evidence[labels[feature]] = {"feature": feature, "correlation": round(r[feature].item(), 3),
                                             "intensity": intensity * sign, "change": round(change, 3)}
    sae.labels = labels
    return evidence


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


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild the embedded voice's decoder-input SAE into ``--out``."""
    from polysteer.plugins.voice.features import rebuild_args

    args, adapter = rebuild_args(__doc__.splitlines()[0], argv)
    sae = build_decoder_sae(adapter)
    sae.save(args.out / f"{args.voice}-decoder-sae")
    metrics = sae.info.details["metrics"]
    print(sae.describe(), {k: metrics[k] for k in ("fve", "l0", "dead_fraction") if k in metrics})
    for label, evidence in sae.info.details["labels"].items():
        print(f"  {label}: {evidence}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
