"""A voice style from a reference recording: "make the narration sound like this WAV".

The voice cannot read a recording through its text encoder, so the example is *measured*: median
F0, spectral centroid and speaking rate (Whisper's words per second of voiced time), each against
the same measures of the voice's own plain speech of
:data:`~polysteer.plugins.voice.features.HELD_OUT` (or of ``neutral`` recordings). Every voice
*probe* feature (a direction fitted to a measured attribute: pitch, brightness, rate; contrasts
such as intonation are left out) that a shipped style uses and whose dictionary stores a measured
effect table (``details.effect``: the measures at intensities 0..1 on held-out sentences, written
by ``scripts/build_voice_dictionaries.py``) contributes its slope, the relative change of each
measure per unit intensity. The weights solve ``slopes @ weights = example - neutral`` (relative
changes, least squares with a small ridge, clipped to [-2, 2]); features whose weight rounds to
zero are left out. The style's description and ``style.evidence`` say what was measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from polysteer import Component, ConfigError, Style
from polysteer.workflows import candidate_features

MEASURES = ("pitch_hz", "centroid_hz", "rate")
EFFECT_KEYS = {"pitch_hz": "pitch_hz", "centroid_hz": "centroid_hz", "rate": "rate_phonemes_per_s"}
RIDGE = 0.01
MAX_WEIGHT = 2.0


def _load(item: Any) -> tuple[torch.Tensor, int]:
    from polysteer.plugins.voice.whisper_adapter import read_wav

    if isinstance(item, str | Path):
        return read_wav(item)
    if isinstance(item, tuple) and len(item) == 2:
        return torch.as_tensor(item[0]).float().flatten(), int(item[1])
    raise ConfigError(f"a voice example is a WAV path or (waveform, sample_rate), got {type(item).__name__}")


def voiced_seconds(wave: torch.Tensor, sample_rate: int, floor_db: float = -35.0) -> float:
    """Seconds of ``wave`` whose 20 ms frames are within ``floor_db`` of its loudest frame."""
    hop = max(1, sample_rate // 50)
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop)
    if not len(frames):
        return 0.0
    db = 10 * torch.log10(frames.pow(2).mean(1) + 1e-12)
    return float((db > db.max() + floor_db).sum()) * hop / sample_rate


def measure_recordings(waves: Sequence[tuple[torch.Tensor, int]],
                       texts: Sequence[str] | None = None) -> dict[str, float]:
    """Mean median F0, spectral centroid and words per voiced second (words from ``texts``, else
    from Whisper tiny.en) of the recordings."""
    from polysteer.plugins.voice.features import F0_RANGE
    from polysteer.plugins.voice.measures import pitch, spectral_centroid
    from polysteer.plugins.voice.wer import transcribe

    f0, centroid, rate = [], [], []
    for i, (wave, sr) in enumerate(waves):
        f0.append(pitch(wave, sr, **F0_RANGE).median.item())
        centroid.append(spectral_centroid(wave, sr).item())
        words = texts[i] if texts is not None else transcribe([wave], sr)[0]
        seconds = voiced_seconds(wave, sr)
        rate.append(len(words.split()) / seconds if seconds > 0 else math.nan)

    def mean(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan

    return {"pitch_hz": mean(f0), "centroid_hz": mean(centroid), "rate": mean(rate)}


def voice_style_from_example(adapter: Any, examples: Sequence[Any], neutral: Sequence[Any] | None = None,
                             *, name: str = "from-example") -> Style:
    """See the module docstring; ``examples`` and ``neutral`` are WAV paths or ``(waveform, rate)``."""
    from polysteer.plugins.voice.features import HELD_OUT

    target = measure_recordings([_load(e) for e in examples])
    if neutral is None:
        speech = adapter.generate(list(HELD_OUT), seed=0)
        base = measure_recordings([(w, adapter.sample_rate) for w in speech.rows()], list(HELD_OUT))
    else:
        base = measure_recordings([_load(n) for n in neutral])
    wanted = torch.tensor([(target[k] - base[k]) / base[k] for k in MEASURES], dtype=torch.float64)
    if not torch.isfinite(wanted).all():
        raise ConfigError(f"could not measure the examples (pitch, centroid, rate: {target}); give "
                          "recordings of speech")
    features, slopes = [], []
    for c in candidate_features(adapter):
        if "probe" not in c.loaded.info.method:
            continue  # only probes on a measured attribute (pitch, brightness, rate) are solved for
        table = c.loaded.info.details.get("effect", {}).get(c.feature)
        if not table or 1.0 not in table.get("intensity", []):
            continue
        at = table["intensity"].index(1.0)
        slope = [(table[EFFECT_KEYS[k]][at] - table[EFFECT_KEYS[k]][0]) / table[EFFECT_KEYS[k]][0]
                 for k in MEASURES]
        # the intensity-1.0 effect of this feature's style (its weight times the dictionary's)
        slopes.append([s * c.weight for s in slope])
        features.append(c)
    if not features:
        raise ConfigError(f"no shipped voice feature of {adapter.name} has a measured effect table; "
                          "rebuild them with scripts/build_voice_dictionaries.py")
    s = torch.tensor(slopes, dtype=torch.float64).T  # (measures, features)
    weights = torch.linalg.solve(s.T @ s + RIDGE * torch.eye(len(features), dtype=torch.float64),
                                 s.T @ wanted).clamp(-MAX_WEIGHT, MAX_WEIGHT)
    components, evidence = [], []
    for c, w, slope in zip(features, weights.tolist(), slopes, strict=True):
        weight = round(w * c.weight, 2)
        if weight == 0.0:
            continue
        components.append(Component(name=c.feature.replace(" ", "-"), dictionary=c.dictionary,
                                    feature=c.feature, weight=weight))
        evidence.append({"feature": c.feature, "dictionary": c.dictionary, "style": c.style,
                         "weight": weight, "effect_per_unit": dict(zip(MEASURES, (round(x, 3) for x in slope),
                                                                      strict=True))})
    predicted = s @ weights
    description = (f"from {len(examples)} recording(s) on {adapter.name}: " + ", ".join(
        f"{k} {target[k]:.1f} vs {base[k]:.1f} ({float(wanted[i]):+.0%}, the style gives "
        f"{float(predicted[i]):+.0%})" for i, k in enumerate(MEASURES)))
    style = Style(name=name, components=components, description=description)
    style.evidence = evidence  # type: ignore[attr-defined]
    style.measured = {"example": target, "neutral": base}  # type: ignore[attr-defined]
    return style
