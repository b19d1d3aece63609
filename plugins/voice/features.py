"""Voice features built through the core: probes on measured attributes and contrastive pairs.

Everything here is the core harvest (:func:`polysteer.workflows.collect` with the voice plugin's
renderer ``speech``, selector ``voice-positions`` and attribute ``phoneme-measure``, see
:mod:`polysteer.plugins.voice.harvest`) plus the core concept builders
(:func:`polysteer.workflows.probe_concept`, :func:`polysteer.workflows.contrast_vector`,
:func:`polysteer.direction_set`); nothing is voice-specific in the dictionaries themselves.

* **Measured attributes.** Sentences are synthesised (fixed seed) while a site is captured; the
  audio is measured frame by frame (F0 by YIN, spectral centroid) and averaged over each
  phoneme's predicted frames, or the predicted duration itself is taken; a ridge probe from the
  phoneme activations to that value gives a direction: ``higher pitch`` (at
  ``text_encoder.project``, which the duration predictor does not read, so the speaking rate stays
  put; on the prior means only), ``brighter`` (``text_encoder.layers.5``) and ``slower``
  (``duration_predictor.input``).
* **Contrastive examples.** The same sentences ending in ``?`` or ``!`` against ``.``: the
  difference of mean activations gives ``question`` and ``exclamation``.

Each feature is then checked by effect: held-out sentences are synthesised at a few intensities and
the measured pitch, centroid, speaking rate and Whisper word error rate are stored in the
dictionary's details (``details.effect``).
``python scripts/build_voice_dictionaries.py [--out plugins/voice/shipped/dictionary]`` rebuilds the shipped
dictionaries of the embedded voice (``joe-pitch``, ``joe-brightness``, ``joe-rate``,
``joe-intonation``) in a few minutes on one CPU thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from polysteer import DirectionSet, Style, direction_set
from polysteer.steering import steer
from polysteer.workflows import Harvested, batched, contrast_vector, probe_concept, probe_style, probe_vector

PROBE_SITE = "text_encoder.layers.5"
PITCH_SITE = "text_encoder.project"  # after the split: moves pitch, leaves durations alone
RATE_SITE = "duration_predictor.input"
F0_RANGE = {"fmin": 60.0, "fmax": 400.0}
INTENSITIES = (0.0, 0.25, 0.5, 0.75, 1.0)

SENTENCES: tuple[str, ...] = (
    "The weather is lovely today.", "Could you pass me the salt, please.",
    "I never thought I would see the ocean again.", "Turn left at the second traffic light.",
    "My brother plays the violin every evening.", "We should leave before it starts to rain.",
    "The library closes at eight on weekdays.", "She painted the kitchen a bright yellow.",
    "Nobody knows where the old map went.", "Please remember to water the plants.",
    "The train to Boston is running late.", "He laughed so hard that he cried.",
    "Our team finally won the championship.", "A cup of tea sounds wonderful right now.",
    "The children built a castle out of sand.", "Write your name at the top of the page.",
    "This bridge was built over a hundred years ago.", "I would like two tickets for the evening show.",
    "The museum has a new exhibit about whales.", "Keep the receipt in case you need to return it.",
    "The garden is full of roses in June.", "You can find the keys on the kitchen table.",
    "The meeting was moved to Thursday morning.", "My grandmother makes the best apple pie.",
    "The dog chased the ball across the park.", "It takes an hour to drive to the coast.",
    "They opened a small bakery on our street.", "The stars are very bright tonight.",
    "He forgot his umbrella at the office.", "The river froze during the long winter.",
    "We watched the sunset from the hill.", "The printer is out of paper again.",
)
"""Training sentences (statements; the contrastive sets swap the final full stop)."""

HELD_OUT: tuple[str, ...] = (
    "Let me tell you a story about a small village.", "The soup needs a little more salt.",
    "Our flight leaves early in the morning.", "The cat is sleeping on the warm windowsill.",
)
"""Sentences never used for building, for checking each feature's effect."""


@dataclass
class Harvest:
    """Per-sentence phoneme activations and per-phoneme measurements of synthesised speech."""

    acts: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # site -> [(P, C)]
    pitch: list[torch.Tensor] = field(default_factory=list)  # [(P,)] Hz, NaN where unvoiced
    centroid: list[torch.Tensor] = field(default_factory=list)  # [(P,)] Hz
    log_duration: list[torch.Tensor] = field(default_factory=list)  # [(P,)] log frames


def per_phoneme(values: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """Mean of frame ``values`` ``(frames,)`` over each phoneme's frames, ignoring NaN: ``(P,)``."""
    ends = durations.long().cumsum(0)
    frames = torch.arange(len(values))
    which = torch.searchsorted(ends, frames, right=True)  # the phoneme each frame belongs to
    ok = ~values.isnan() & (which < len(durations))
    total = torch.zeros(len(durations)).index_add_(0, which[ok], values[ok].float())
    count = torch.zeros(len(durations)).index_add_(0, which[ok], torch.ones(int(ok.sum())))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def frame_measures(adapter: Any, wave: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """F0 and spectral centroid per output frame ``(frames,)``, aligned to the latent frames."""
    from polysteer.plugins.voice.measures import f0_frames, spectral_centroid_frames

    hop = adapter.hop
    f0 = f0_frames(wave, adapter.sample_rate, hop_s=hop / adapter.sample_rate, **F0_RANGE)[0]
    window = int(2 * math.ceil(adapter.sample_rate / F0_RANGE["fmin"]) + 2)
    shift = round(window / 2 / hop)  # a YIN frame starting at k * hop is centred `shift` frames on
    pitch = torch.full((frames,), math.nan)
    pitch[shift: shift + len(f0)] = f0[: max(0, frames - shift)]
    centroid = spectral_centroid_frames(wave, adapter.sample_rate, n_fft=4 * hop, hop_length=hop)[0]
    bright = torch.full((frames,), math.nan)
    bright[: min(frames, len(centroid))] = centroid[:frames]
    return pitch, bright


def _collect(adapter: Any, sentences: Sequence[Any], sites: Sequence[str], *, seed: int = 0,
             progress: bool = True, measure: bool = True) -> Harvested:
    """The core harvest of ``sites`` over ``sentences`` (renderer ``speech``, selector
    ``voice-positions``), with the phoneme measures as per-row values (pitch and centroid only
    with ``measure``)."""
    from polysteer.plugins.voice.harvest import SpeechRenderer, phoneme_measure, voice_positions
    from polysteer.workflows import collect

    names = ("log_duration", "pitch", "centroid") if measure else ("log_duration",)
    return collect(adapter, batched(list(sentences), 1), list(sites),
                   renderer=SpeechRenderer(seed=seed), rows=voice_positions(),
                   attributes={n: phoneme_measure(n) for n in names}, progress=progress,
                   total_items=len(sentences), desc="synthesising")


def harvest(adapter: Any, sentences: Sequence[Any], sites: Sequence[str], *, seed: int = 0,
            progress: bool = True, measure: bool = True) -> Harvest:
    """Synthesise each sentence alone (no padding effects) capturing ``sites``; measure it
    (a thin use of the core harvest: see :func:`_collect`)."""
    got = _collect(adapter, sentences, sites, seed=seed, progress=progress, measure=measure)
    first = list(sites)[0]
    out = Harvest(acts={s: got.per_example(s) for s in sites},
                  log_duration=got.per_example_values(first, "log_duration"))
    if measure:
        out.pitch = got.per_example_values(first, "pitch")
        out.centroid = got.per_example_values(first, "centroid")
    return out


def probe_direction(acts: list[torch.Tensor], values: list[torch.Tensor],
                    ridge: float = 0.1) -> tuple[torch.Tensor, float]:
    """A ridge probe from phoneme activations to a measured value (NaN rows left out), and its
    correlation with the value on the training rows (:func:`polysteer.workflows.probe_vector`)."""
    rows = torch.cat(acts)
    got = Harvested(["x"], len(acts), rows={"x": rows},
                    example={"x": torch.zeros(len(rows), dtype=torch.long)},
                    values={"x": {"y": torch.cat(values)}})
    w, _, r = probe_vector(got, "x", "y", ridge=ridge)
    return w, r


def measure_effect(adapter: Any, dictionary: DirectionSet, feature: str,
                   intensities: Sequence[float] = INTENSITIES,
                   sentences: Sequence[str] = HELD_OUT, seed: int = 0,
                   intelligibility: bool = True) -> dict[str, list[float]]:
    """Measured effect of a feature on held-out speech (one batch per intensity): mean median
    pitch, pitch of the last third, centroid, speaking rate and, with ``intelligibility``,
    Whisper's word error rate (a fraction) against the sentences."""
    from polysteer.plugins.voice.measures import pitch, spectral_centroid

    style = one_feature_style(dictionary, feature)
    keys = ["pitch_hz", "pitch_end_hz", "centroid_hz", "rate_phonemes_per_s"]
    table: dict[str, list[float]] = {"intensity": list(intensities), **{k: [] for k in keys}}
    if intelligibility:
        table["wer"] = []
    for intensity in intensities:
        with steer(adapter, style, intensity=intensity):
            speech = adapter.generate(list(sentences), seed=seed)
        waves = speech.rows()
        rows = {
            "pitch_hz": [pitch(w, adapter.sample_rate, **F0_RANGE).median.item() for w in waves],
            "pitch_end_hz": [pitch(w[len(w) * 2 // 3:], adapter.sample_rate, **F0_RANGE).median.item()
                             for w in waves],
            "centroid_hz": [spectral_centroid(w, adapter.sample_rate).item() for w in waves],
            "rate_phonemes_per_s": adapter.speaking_rate(speech).tolist()}
        for key, values in rows.items():
            finite = [v for v in values if math.isfinite(v)]
            table[key].append(round(sum(finite) / len(finite), 2) if finite else math.nan)
        if intelligibility:
            from polysteer.plugins.voice.wer import transcribe, word_error_rate

            heard = transcribe(waves, adapter.sample_rate)
            table["wer"].append(round(word_error_rate(list(sentences), heard), 4))
    return table


def one_feature_style(dictionary: DirectionSet, feature: str, **component: Any) -> Style:
    """A one-component ``add`` style over an in-memory dictionary (core's
    :func:`~polysteer.workflows.probe_style`, named after the feature)."""
    return probe_style(dictionary, feature, name=feature, **component)


def build_voice_dictionaries(adapter: Any, *, prefix: str = "joe", progress: bool = True,
                             check: bool = True) -> dict[str, DirectionSet]:
    """Every shipped voice dictionary of ``adapter``'s voice, by name (``<prefix>-pitch``, ...).

    One core harvest of the training sentences gives the probes (:func:`polysteer.probe_concept`)
    and the statements the intonation contrasts (:func:`polysteer.workflows.contrast_vector`) start
    from; each dictionary's site norm is the median norm of the statements' phoneme rows at its site.
    Rebuilt on joe, the vectors and scales equal the shipped files'; the site norm of ``joe-pitch``
    is 0.02% lower (11.1923 vs 11.1940): the builder before the core one dropped the first
    phoneme row of the first sentence by accident (a sink rule meant for token batches).
    """
    sites = [PROBE_SITE, PITCH_SITE, RATE_SITE]
    base = _collect(adapter, SENTENCES, sites, progress=progress)
    made: dict[str, DirectionSet] = {}
    model = adapter.model_fingerprint
    common = {"sentences": len(SENTENCES), "seed": 0, "voice": adapter.name}
    for name, label, values, site in (("pitch", "higher pitch", "pitch", PITCH_SITE),
                                      ("brightness", "brighter", "centroid", PROBE_SITE),
                                      ("rate", "slower", "log_duration", RATE_SITE)):
        # the pitch probe reads the prior means only: pushing the log-scales adds noise, garbling speech
        channels = adapter.model.config.flow_size if site == PITCH_SITE else None
        target = {"pitch": "F0 (Hz, YIN) per phoneme", "brightness": "spectral centroid (Hz) per phoneme",
                  "rate": "log predicted duration (frames) per phoneme"}[name]
        made[f"{prefix}-{name}"] = probe_concept(
            label, site, base, values, model=model, ridge=0.1, channels=channels,
            method="linear-probe", details={**common, "target": target})
    questions, exclaims = (_collect(adapter, [s[:-1] + end for s in SENTENCES], [PROBE_SITE],
                                    progress=progress, measure=False) for end in "?!")
    vectors = [contrast_vector("mean-diff", q, base, PROBE_SITE)[0] for q in (questions, exclaims)]
    made[f"{prefix}-intonation"] = direction_set(
        vectors, ["question", "exclamation"], site=PROBE_SITE, site_norm=base.site_norm(PROBE_SITE),
        model=model, method="mean-diff",
        details={**common, "positive": {"question": "same sentences ending in '?'",
                                        "exclamation": "same sentences ending in '!'"},
                 "negative": "the sentences ending in '.'"})
    if check:
        for dictionary in made.values():
            dictionary.info.details["effect"] = {
                label: measure_effect(adapter, dictionary, label) for label in dictionary.labels}
    return made
