#!/usr/bin/env python
"""Build the shipped cross-modal concepts (text, image, voice) and measure them.

    python scripts/build_crossmodal_concepts.py                 # build + calibrate every concept
    python scripts/build_crossmodal_concepts.py cheerful calm   # only these
    python scripts/build_crossmodal_concepts.py --measure       # the intensity sweep, plots, table

A concept is ``configs/crossmodal/NAME.yaml``. Each realisation is built by polysteer from data:

* **text** (SmolLM2): the contrastive examples of ``configs/concepts/<spec>.yaml`` through the one
  concept builder (:func:`polysteer.plugins.text.concepts.build_concept`, as
  ``scripts/build_concepts.py`` does), saved as ``plugins/text/shipped/dictionary/smollm2-NAME``
  (an existing dictionary of exactly that spec is reused);
* **image** (the avatar model): a contrast of the model's own conditions or of rendered avatar pairs
  (:func:`polysteer.plugins.image.concepts.build_image_concept`), saved as
  ``plugins/image/shipped/dictionary/avatars-NAME``; ``reuse: DICT`` takes a shipped dictionary that
  ``scripts/build_image_concepts.py`` builds the same way;
* **voice** (Piper joe): one core harvest of :data:`~polysteer.plugins.voice.features.SENTENCES`
  at ``text_encoder.layers.5`` with each phoneme's measured F0, spectral centroid and predicted
  duration; the concept's prosody profile (signs from the vocal-expression literature, in the spec)
  turns them into one target, the sum of the signed z-scores; a ridge probe to it
  (:func:`polysteer.probe_concept`) is the direction, saved as ``plugins/voice/shipped/dictionary/joe-NAME``.

**Weights are measured, not chosen.** Each realisation's weight (what intensity 1.0 of the style
means on that modality) is the strongest point of a grid that stays coherent on held-out inputs:

* text: perplexity of :data:`NEUTRAL_TEXTS` (teacher-forced, under the steered model) at most
  :data:`TEXT_GATE` x the unsteered perplexity; the gate is set by the shipped ``positive`` concept,
  whose coherent range is documented (0.1-0.3 x the median norm coherent, 0.65 broken);
* image: the avatar attribute classifier still reads the attributes the concept does not touch as
  on the unsteered images (at least :data:`IMAGE_GATE` of the readings, over :data:`IMAGE_SEEDS`
  avatars: at most one in four readings of hair, skin, background... may change);
* voice: Whisper tiny.en's word error rate on the held-out sentences at most
  :data:`VOICE_GATE` above the unsteered one, and a speaking rate within
  :data:`VOICE_RATE_RANGE` times the unsteered one.

The grid, every point's value and the choice are written to ``docs/figures/crossmodal-build/NAME.json``
and into each style's header. Styles go to ``configs/style/NAME.yaml``.

``--measure`` sweeps each style at intensities 0, 0.25, 0.5, 0.75, 1 on each model and writes
``docs/figures/crossmodal-measure/NAME.json`` (and the first avatars of each intensity); ``--plot``
draws ``docs/figures/crossmodal-{text,image,voice}.png`` and ``crossmodal-avatars.png`` from them
and writes the table in ``docs/crossmodal.md``. ``--recalibrate MODALITY`` re-runs one modality's
weight calibration on the built dictionaries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "configs" / "crossmodal"
CONCEPTS = ROOT / "configs" / "concepts"
STYLES = ROOT / "configs" / "style"
FIGURES = ROOT / "docs" / "figures"
DOC = ROOT / "docs" / "crossmodal.md"
RECORDS = FIGURES / "crossmodal-build"
MEASURED = FIGURES / "crossmodal-measure"
SHIPPED = {m: ROOT / "plugins" / m / "shipped" / "dictionary" for m in ("text", "image", "voice")}
PREFIX = {"text": "smollm2", "image": "avatars", "voice": "joe"}

VOICE_SITE = "text_encoder.layers.5"
PROSODY = {"pitch": ("pitch", 1.0), "brightness": ("centroid", 1.0), "rate": ("log_duration", -1.0)}
"""Profile key -> (measured phoneme value, sign): faster rate = shorter phonemes."""

TEXT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5)
IMAGE_GRID = (0.5, 1.0, 1.5, 2.0, 3.0)
VOICE_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
TEXT_GATE = 1.5
IMAGE_GATE = 0.75
VOICE_GATE = 0.15
VOICE_RATE_RANGE = (0.5, 2.0)
"""Speech slower than half or faster than twice the voice's own rate is no longer natural speech,
even where Whisper still follows it (it lost 40% of the words of other sentences at 0.44x)."""
IMAGE_SEEDS = 6
IMAGE_STEPS = 10
INTENSITIES = (0.0, 0.25, 0.5, 0.75, 1.0)

NEUTRAL_TEXTS = [
    "The museum opens at nine and closes at five, except on public holidays.",
    "To reset the router, hold the small button on the back for ten seconds.",
    "The recipe needs two eggs, a cup of flour and a pinch of salt.",
    "Our office moved to the third floor of the building next to the station.",
    "The river flows north through the valley before it reaches the sea.",
    "Please bring your passport and a printed copy of the booking.",
]
"""Held-out neutral text for the text coherence gate (no concept's examples)."""

MEASURE_PROMPTS = ["Tell me about your weekend.", "Describe the town where you live.",
                   "Write a short note to a neighbour.", "Describe the view from your window.",
                   "What did you do yesterday evening?", "Tell me about a walk you took recently.",
                   "Describe your favourite meal.", "Write a few lines about your morning commute."]
"""Prompts of the text sweep (not used for building or calibrating)."""

VOICE_GATE_SENTENCES = ["Please close the gate behind you when you leave.",
                        "The library has a new shelf of travel books.",
                        "The painter left the ladder by the door.",
                        "My uncle grows tomatoes in his back garden."]
"""With the voice's held-out sentences, the voice coherence gate (four were too few: a slow voice
that Whisper still followed there lost 40% of the words of other sentences)."""

MEASURE_SENTENCES = ["The bakery on the corner opens at six.",
                     "We will meet by the fountain after lunch.",
                     "Remember to bring a warm coat tomorrow.",
                     "The postman knocked twice and left a parcel.",
                     "She keeps her bicycle in the shed behind the house."]
"""Sentences of the voice sweep (not used for building or calibrating)."""


def load_specs(names: list[str]) -> list[dict[str, Any]]:
    paths = [SPECS / f"{n}.yaml" for n in names] if names else sorted(SPECS.glob("*.yaml"))
    specs = []
    for path in paths:
        spec = yaml.safe_load(path.read_text())
        for key in ("name", "text", "image", "voice", "judge"):
            if key not in spec:
                raise SystemExit(f"{path}: missing {key!r}")
        unknown = set(spec["voice"]) - set(PROSODY)
        if unknown:
            raise SystemExit(f"{path}: voice: unknown measures {sorted(unknown)}; use {sorted(PROSODY)}")
        specs.append(spec)
    return specs


# -- text ------------------------------------------------------------------------------------------
def build_text(adapter: Any, spec: dict) -> tuple[str, str]:
    """``(dictionary name, feature)``: the contrastive concept of the text spec."""
    from polysteer import load_dictionary
    from polysteer.plugins.text.concepts import ConceptSpec, build_concept

    concept = ConceptSpec.load(CONCEPTS / f"{spec['text']['spec']}.yaml")
    name = f"{PREFIX['text']}-{concept.name}"
    if (SHIPPED["text"] / name).exists() and concept.name != spec["name"]:
        load_dictionary(SHIPPED["text"] / name)  # built by scripts/build_concepts.py from that spec
        return name, concept.name
    dictionary = build_concept(adapter, concept)
    dictionary.save(SHIPPED["text"] / name)
    return name, concept.name


def text_nll(adapter: Any, texts: list[str]) -> float:
    """Mean per-token negative log-likelihood of ``texts`` (teacher-forced, one forward pass)."""
    import torch

    encoded = adapter.encode(texts, chat=False, padding_side="right")
    logits, mask = adapter.forward(encoded)
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    target = encoded["input_ids"][:, 1:]
    nll = -logp.gather(-1, target[..., None])[..., 0]
    weight = mask[:, 1:].float()
    return float((nll * weight).sum() / weight.sum())


def one_style(dictionary: str, feature: str, **extra: Any):
    from polysteer import Component, Style

    return Style(name=feature, components=[Component(name=feature, dictionary=dictionary,
                                                     feature=feature, **extra)])


def calibrate_text(adapter: Any, dictionary: str, feature: str) -> dict[str, Any]:
    import polysteer as ps

    base = math.exp(text_nll(adapter, NEUTRAL_TEXTS))
    points = []
    for weight in TEXT_GRID:
        with ps.steer(adapter, one_style(dictionary, feature), intensity=weight):
            ppl = math.exp(text_nll(adapter, NEUTRAL_TEXTS))
        points.append({"weight": weight, "perplexity": round(ppl, 3), "ratio": round(ppl / base, 3)})
        if points[-1]["ratio"] > TEXT_GATE:
            break  # stronger points only get worse
    return _choose(points, lambda p: p["ratio"] <= TEXT_GATE, {
        "gate": f"teacher-forced perplexity of {len(NEUTRAL_TEXTS)} held-out neutral texts <= "
                f"{TEXT_GATE} x unsteered ({base:.2f})", "unsteered": round(base, 3)})


def _choose(points: list[dict], ok, info: dict) -> dict[str, Any]:
    passing = [p["weight"] for p in points if ok(p)]
    # the strongest point below the first failure (coherence is lost as intensity grows)
    chosen = None
    for p in points:
        if not ok(p):
            break
        chosen = p["weight"]
    if chosen is None:
        chosen = points[0]["weight"]
        info["note"] = "no grid point passed the gate; the weakest was taken"
    return {**info, "grid": points, "passing": passing, "weight": chosen}


# -- image -----------------------------------------------------------------------------------------
def image_spec(spec: dict):
    from polysteer.plugins.image.concepts import ImageConceptSpec

    data = dict(spec["image"])
    reuse = data.pop("reuse", None)
    if reuse:
        return ImageConceptSpec.load(ROOT / "configs" / "image-concepts" / f"{reuse}.yaml"), True
    data.setdefault("samples", 16)
    data.setdefault("steps", IMAGE_STEPS)
    return ImageConceptSpec(name=f"{PREFIX['image']}-{spec['name']}", **data), False


def build_image(adapter: Any, spec: dict) -> tuple[str, str, dict | None, dict[str, str]]:
    """``(dictionary, feature, region, the concept's attribute values)``."""
    from polysteer.plugins.image.concepts import build_image_concept

    ispec, reused = image_spec(spec)
    if not reused:
        build_image_concept(adapter, ispec).save(SHIPPED["image"] / ispec.name)
    attributes = dict(ispec.positive or ispec.positive_render or {})
    return ispec.name, ispec.name, ispec.region, attributes


def avatars(adapter: Any, style: Any = None, intensity: float = 0.0):
    import polysteer as ps

    if style is None:
        return adapter.generate(IMAGE_SEEDS, seed=0, num_inference_steps=IMAGE_STEPS).outputs
    with ps.steer(adapter, style, intensity=intensity):
        return adapter.generate(IMAGE_SEEDS, seed=0, num_inference_steps=IMAGE_STEPS).outputs


def predicted(images) -> dict[str, Any]:
    from polysteer.plugins.image.classifier import shipped_classifier

    return {a: p.argmax(-1) for a, p in shipped_classifier().probabilities(images).items()}


def concept_probability(images, attributes: dict[str, str]) -> float:
    from polysteer.plugins.image.classifier import shipped_classifier

    classifier = shipped_classifier()
    scores = [classifier.score(images, a, v).mean().item() for a, v in attributes.items()]
    return sum(scores) / len(scores)


def calibrate_image(adapter: Any, dictionary: str, feature: str, region: dict | None,
                    attributes: dict[str, str]) -> dict[str, Any]:
    base = avatars(adapter)
    kept = [a for a in predicted(base) if a not in attributes]
    before = predicted(base)
    positions = {"kind": "region", **region} if region else {"kind": "all"}
    points = []
    for weight in IMAGE_GRID:
        images = avatars(adapter, one_style(dictionary, feature, positions=positions), weight)
        after = predicted(images)
        same = sum(int((after[a] == before[a]).sum()) for a in kept) / (len(kept) * len(images))
        points.append({"weight": weight, "kept_attributes": round(same, 3),
                       "concept_probability": round(concept_probability(images, attributes), 3)})
        if same < IMAGE_GATE:
            break
    return _choose(points, lambda p: p["kept_attributes"] >= IMAGE_GATE, {
        "gate": f"the classifier reads {', '.join(kept)} as on the unsteered images for >= "
                f"{IMAGE_GATE:.0%} of {IMAGE_SEEDS} avatars ({IMAGE_STEPS} steps)",
        "unsteered_concept_probability": round(concept_probability(base, attributes), 3)})


# -- voice -----------------------------------------------------------------------------------------
def voice_harvest(adapter: Any):
    from polysteer.plugins.voice.features import SENTENCES
    from polysteer.plugins.voice.harvest import SpeechRenderer, phoneme_measure, voice_positions
    from polysteer.workflows import batched, collect

    return collect(adapter, batched(list(SENTENCES), 1), [VOICE_SITE], renderer=SpeechRenderer(seed=0),
                   rows=voice_positions(),
                   attributes={n: phoneme_measure(n) for n in ("pitch", "centroid", "log_duration")},
                   progress=True, total_items=len(SENTENCES), desc="synthesising")


def build_voice(adapter: Any, spec: dict, harvested: Any) -> tuple[str, str]:
    import torch

    from polysteer.plugins.voice.features import SENTENCES
    from polysteer.workflows import probe_concept

    values = harvested.values[VOICE_SITE]
    target = torch.zeros_like(values["log_duration"])
    terms = []
    for key, sign in spec["voice"].items():
        measure, direction = PROSODY[key]
        v = values[measure].float()
        z = (v - v.nanmean()) / v[~v.isnan()].std()
        target = target + float(sign) * direction * z
        terms.append(f"{'+' if sign * direction > 0 else '-'}z({measure})")
    label = f"{spec['name']}-prosody"
    values[label] = target  # NaN where a phoneme is unvoiced (no F0): left out of the probe
    name = f"{PREFIX['voice']}-{spec['name']}"
    dictionary = probe_concept(
        spec["name"], VOICE_SITE, harvested, label, model=adapter.model_fingerprint, ridge=0.1,
        method="linear-probe", details={
            "target": " ".join(terms) + " per phoneme (z-scores over the training phonemes)",
            "profile": dict(spec["voice"]), "sentences": len(SENTENCES), "seed": 0,
            "voice": adapter.name})
    dictionary.save(SHIPPED["voice"] / name)
    return name, spec["name"]


def speech_measures(adapter: Any, speech: Any, sentences: list[str]) -> dict[str, float]:
    from polysteer.plugins.voice.features import F0_RANGE
    from polysteer.plugins.voice.measures import pitch, spectral_centroid
    from polysteer.plugins.voice.wer import transcribe, word_error_rate

    waves = speech.rows()

    def mean(values):
        finite = [v for v in values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan

    heard = transcribe(waves, adapter.sample_rate)
    return {"pitch_hz": mean([pitch(w, adapter.sample_rate, **F0_RANGE).median.item() for w in waves]),
            "centroid_hz": mean([spectral_centroid(w, adapter.sample_rate).item() for w in waves]),
            "rate_phonemes_per_s": mean(adapter.speaking_rate(speech).tolist()),
            "wer": word_error_rate(list(sentences), heard)}


def calibrate_voice(adapter: Any, dictionary: str, feature: str) -> dict[str, Any]:
    import polysteer as ps
    from polysteer.plugins.voice.features import HELD_OUT

    sentences = [*HELD_OUT, *VOICE_GATE_SENTENCES]
    base = speech_measures(adapter, adapter.generate(sentences, seed=0), sentences)
    points = []
    for weight in VOICE_GRID:
        with ps.steer(adapter, one_style(dictionary, feature), intensity=weight):
            speech = adapter.generate(sentences, seed=0)
        got = speech_measures(adapter, speech, sentences)
        points.append({"weight": weight, **{k: round(v, 3) for k, v in got.items()}})
        if not _voice_coherent(got, base):
            break
    low, high = VOICE_RATE_RANGE
    return _choose(points, lambda p: _voice_coherent(p, base), {
        "gate": f"Whisper tiny.en word error rate on {len(sentences)} held-out sentences <= "
                f"unsteered ({base['wer']:.3f}) + {VOICE_GATE}, speaking rate {low}-{high} x "
                f"unsteered ({base['rate_phonemes_per_s']:.1f} phonemes/s)",
        "unsteered": {k: round(v, 3) for k, v in base.items()}})


def _voice_coherent(got: dict[str, float], base: dict[str, float]) -> bool:
    low, high = VOICE_RATE_RANGE
    rate = got["rate_phonemes_per_s"] / base["rate_phonemes_per_s"]
    return got["wer"] <= base["wer"] + VOICE_GATE and low <= rate <= high


# -- styles ----------------------------------------------------------------------------------------
def write_style(spec: dict, made: dict[str, dict], calibration: dict[str, dict]) -> Path:
    name = spec["name"]
    realisations = {}
    for modality in ("text", "image", "voice"):
        m = made[modality]
        real = {"dictionary": m["dictionary"], "feature": m["feature"],
                "weight": calibration[modality]["weight"]}
        if m.get("region"):
            real["positions"] = {"kind": "region", **m["region"]}
        realisations[modality] = real
    data = {"name": name, "description": f"{spec['description']} (text, image and voice)",
            "concepts": {name: realisations},
            "components": [{"name": name, "concept": name, "weight": 1.0}]}
    text, image, voice = (calibration[m] for m in ("text", "image", "voice"))
    profile = ", ".join(f"{'higher' if s > 0 else 'lower'} {k}" if k != "rate" else
                        ("faster" if s > 0 else "slower") for k, s in spec["voice"].items())
    header = [
        f"Cross-modal concept {name!r}: generated by scripts/build_crossmodal_concepts.py (rebuild,",
        f"do not edit the weights by hand). Spec: configs/crossmodal/{name}.yaml.",
        f"text: {made['text']['dictionary']}, difference of means of the contrastive examples in",
        f"  configs/concepts/{spec['text']['spec']}.yaml at {made['text']['site']};",
        f"image: {made['image']['dictionary']}, {made['image']['how']};",
        f"voice: {made['voice']['dictionary']}, ridge probe at {VOICE_SITE} to the measured prosody",
        f"  profile ({profile}).",
        "Intensity 1.0 = each modality's strongest grid point that stayed coherent on held-out inputs:",
        f"  text weight {text['weight']} ({text['gate']});",
        f"  image weight {image['weight']} ({image['gate']});",
        f"  voice weight {voice['weight']} ({voice['gate']}).",
        "Every grid point: docs/figures/crossmodal-build/NAME.json; curves: docs/crossmodal.md.",
    ]
    path = STYLES / f"{name}.yaml"
    path.write_text("".join(f"# {line}\n" for line in header)
                    + yaml.safe_dump(data, sort_keys=False, width=100))
    return path


def made_image(image: Any, spec: dict) -> dict[str, Any]:
    """Build the image realisation of ``spec``; what the record says of it."""
    dictionary, feature, region, attributes = build_image(image, spec)
    ispec, reused = image_spec(spec)
    source = (f"contrast of the model's conditions {ispec.positive} vs {ispec.negative}"
              if ispec.positive else f"contrast of rendered avatar pairs {ispec.positive_render} vs "
              f"{ispec.negative_render}")
    where = f" ({', '.join(f'{k} {v}' for k, v in region.items())} region)" if region else ""
    return {"dictionary": dictionary, "feature": feature, "region": region,
            "attributes": attributes,
            "how": f"{source} at {ispec.site}{where}" + (" (shipped, built by "
                   "scripts/build_image_concepts.py)" if reused else "")}


def recalibrate(specs: list[dict], modality: str, rebuild: bool = False) -> None:
    """Re-run one modality's calibration on the built dictionaries (after building that
    modality's realisation again with ``rebuild``, image only); rewrite the style and record."""
    import polysteer as ps

    adapter = ps.load_model({"text": "smollm2", "image": "avatars", "voice": "joe"}[modality])
    for spec in specs:
        path = RECORDS / f"{spec['name']}.json"
        record = json.loads(path.read_text())
        if rebuild:
            record["made"][modality] = made_image(adapter, spec)
            path.write_text(json.dumps(record, indent=1) + "\n")
        m = record["made"][modality]
        if modality == "text":
            got = calibrate_text(adapter, m["dictionary"], m["feature"])
        elif modality == "image":
            got = calibrate_image(adapter, m["dictionary"], m["feature"], m.get("region"), m["attributes"])
        else:
            got = calibrate_voice(adapter, m["dictionary"], m["feature"])
        print(f"{spec['name']} {modality}: weight {got['weight']}  grid {got['grid']}", file=sys.stderr)
        record = json.loads(path.read_text())  # again: another modality may have been recalibrated
        record["calibration"][modality] = got
        path.write_text(json.dumps(record, indent=1) + "\n")
        write_style(spec, record["made"], record["calibration"])


def build(specs: list[dict]) -> None:
    import polysteer as ps
    from polysteer import load_dictionary

    text, image, voice = (ps.load_model(n) for n in ("smollm2", "avatars", "joe"))
    harvested = voice_harvest(voice)
    for spec in specs:
        name = spec["name"]
        print(f"== {name}", file=sys.stderr)
        made: dict[str, dict] = {}
        dictionary, feature = build_text(text, spec)
        made["text"] = {"dictionary": dictionary, "feature": feature,
                        "site": load_dictionary(SHIPPED["text"] / dictionary).info.site}
        made["image"] = made_image(image, spec)
        region, attributes = made["image"]["region"], made["image"]["attributes"]
        dictionary, feature = build_voice(voice, spec, harvested)
        made["voice"] = {"dictionary": dictionary, "feature": feature}
        calibration = {
            "text": calibrate_text(text, made["text"]["dictionary"], made["text"]["feature"]),
            "image": calibrate_image(image, made["image"]["dictionary"], made["image"]["feature"],
                                     region, attributes),
            "voice": calibrate_voice(voice, made["voice"]["dictionary"], made["voice"]["feature"])}
        for modality, c in calibration.items():
            print(f"  {modality}: weight {c['weight']}  grid {c['grid']}", file=sys.stderr)
        print(f"  -> {write_style(spec, made, calibration).relative_to(ROOT)}", file=sys.stderr)
        RECORDS.mkdir(parents=True, exist_ok=True)
        (RECORDS / f"{name}.json").write_text(json.dumps({"made": made, "calibration": calibration},
                                                         indent=1) + "\n")


# -- measuring -------------------------------------------------------------------------------------
class TextJudge:
    """A multinomial naive Bayes over word counts, fitted on a concept's held-out judge examples
    (``judge`` in its spec: never used to build the direction, written separately). It shares
    nothing with the steering direction: no model, no activations, only the judge's own words."""

    def __init__(self, positive: list[str], negative: list[str]):
        self.counts = [self._count(negative), self._count(positive)]
        self.vocab = set(self.counts[0]) | set(self.counts[1])
        self.totals = [sum(c.values()) for c in self.counts]

    @staticmethod
    def _words(text: str) -> list[str]:
        import re

        return re.findall(r"[a-z']+|!", text.lower())

    def _count(self, texts: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for text in texts:
            for w in self._words(text):
                counts[w] = counts.get(w, 0) + 1
        return counts

    def probability(self, text: str) -> float:
        """P(concept | text) with equal priors and add-one smoothing (0.5 for no known words)."""
        logs = [0.0, 0.0]
        for w in self._words(text):
            if w not in self.vocab:
                continue
            for k in (0, 1):
                logs[k] += math.log((self.counts[k].get(w, 0) + 1) / (self.totals[k] + len(self.vocab)))
        return 1.0 / (1.0 + math.exp(logs[0] - logs[1]))


def continuation_perplexity(adapter: Any, texts: list[str]) -> float:
    """Perplexity of the generated texts under the unsteered model (mean over texts)."""
    values = [math.exp(text_nll(adapter, [t])) for t in texts if len(t.split()) > 1]
    return sum(values) / len(values) if values else math.nan


def measure(specs: list[dict], new_tokens: int) -> None:
    """Sweep each concept's style over :data:`INTENSITIES` on the three models; one JSON per concept
    in ``docs/figures/crossmodal-measure/`` (several processes can measure different concepts)."""
    import torch
    from tqdm.auto import tqdm

    import polysteer as ps
    from polysteer.io import write_tensors
    from polysteer.plugins.image.measures import brightness, distance_to_baseline, saturation, warmth

    text, image, voice = (ps.load_model(n) for n in ("smollm2", "avatars", "joe"))
    base_text = text.generate(MEASURE_PROMPTS, max_new_tokens=new_tokens).texts
    base_image = avatars(image)
    base_voice = voice.generate(MEASURE_SENTENCES, seed=0)
    MEASURED.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        name = spec["name"]
        record = json.loads((RECORDS / f"{name}.json").read_text())
        style = ps.load_style(name)
        judge = TextJudge(spec["judge"]["positive"], spec["judge"]["negative"])
        attributes = record["made"]["image"]["attributes"]
        rows: dict[str, list[dict]] = {"text": [], "image": [], "voice": []}
        columns = []
        for intensity in tqdm(INTENSITIES, desc=f"{name}: intensities", unit="run"):
            if intensity == 0.0:
                texts, images, speech = base_text, base_image, base_voice
            else:
                with ps.steer(text, style, intensity=intensity):
                    texts = text.generate(MEASURE_PROMPTS, max_new_tokens=new_tokens).texts
                images = avatars(image, style, intensity)
                with ps.steer(voice, style, intensity=intensity):
                    speech = voice.generate(MEASURE_SENTENCES, seed=0)
            rows["text"].append({"intensity": intensity,
                                 "judge": round(sum(map(judge.probability, texts)) / len(texts), 3),
                                 "perplexity": round(continuation_perplexity(text, texts), 3),
                                 "texts": texts})
            distance = distance_to_baseline(images, base_image).mean().item()
            rows["image"].append({"intensity": intensity,
                                  "concept_probability": round(concept_probability(images, attributes), 3),
                                  "brightness": round(brightness(images).mean().item(), 4),
                                  "warmth": round(warmth(images).mean().item(), 4),
                                  "saturation": round(saturation(images).mean().item(), 4),
                                  "distance": round(distance, 4)})
            got = speech_measures(voice, speech, MEASURE_SENTENCES)
            rows["voice"].append({"intensity": intensity, **{k: round(v, 3) for k, v in got.items()}})
            columns.append(images[:4])
        write_tensors(MEASURED / f"{name}.safetensors",
                      {"avatars": torch.stack(columns, 1).flatten(0, 1).contiguous()})
        (MEASURED / f"{name}.json").write_text(json.dumps({
            "intensities": list(INTENSITIES), "prompts": MEASURE_PROMPTS, "sentences": MEASURE_SENTENCES,
            "image_seeds": IMAGE_SEEDS, "image_steps": IMAGE_STEPS, "new_tokens": new_tokens,
            **rows}, indent=1) + "\n")


def collected(specs: list[dict]) -> dict[str, Any]:
    return {"concepts": {s["name"]: json.loads((MEASURED / f"{s['name']}.json").read_text())
                         for s in specs}}


def _avatar_figure(grids: list, names: list[str]) -> None:
    import torch

    from polysteer.plugins.image.adapter import image_grid, save_png, to_pil

    images = torch.cat(grids)
    save_png(to_pil(image_grid(images, len(INTENSITIES)), scale=3)[0], FIGURES / "crossmodal-avatars.png")
    print(f"avatars: rows {names} x 4 seeds, columns intensities {INTENSITIES}", file=sys.stderr)


VOICE_PROFILE_KEYS = {"pitch": "pitch_hz", "brightness": "centroid_hz", "rate": "rate_phonemes_per_s"}


def plot(out: dict, specs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {"text": [("judge", "judge P(concept)"), ("perplexity", "perplexity (unsteered model)")],
              "image": [("concept_probability", "classifier P(concept attributes)"),
                        ("distance", "distance to unsteered"), ("brightness", "brightness"),
                        ("warmth", "warmth")],
              "voice": [("pitch_hz", "median F0 (Hz)"), ("rate_phonemes_per_s", "phonemes / s"),
                        ("centroid_hz", "spectral centroid (Hz)"), ("wer", "Whisper WER")]}
    for modality, keys in panels.items():
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0))
        for ax, (key, title) in zip(axes, keys, strict=True):
            for spec in specs:
                rows = out["concepts"][spec["name"]][modality]
                ax.plot([r["intensity"] for r in rows], [r[key] for r in rows], marker="o",
                        label=spec["name"])
            ax.set(title=title, xlabel="style intensity")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"cross-modal concepts on the {modality} model")
        fig.tight_layout()
        fig.savefig(FIGURES / f"crossmodal-{modality}.png", dpi=110)
        plt.close(fig)


def table(out: dict, specs: list[dict]) -> str:
    lines = ["| concept | text judge 0 -> 1 | text perplexity 0 -> 1 | image P(attributes) 0 -> 1 | "
             "image distance at 1 | voice F0 Hz 0 -> 1 | voice rate ph/s 0 -> 1 | voice centroid Hz 0 -> 1 | "
             "WER 0 -> 1 |", "|---|---|---|---|---|---|---|---|---|"]

    def span(rows, key, digits=2):
        return f"{rows[0][key]:.{digits}f} -> {rows[-1][key]:.{digits}f}"

    for spec in specs:
        c = out["concepts"][spec["name"]]
        lines.append(f"| {spec['name']} | {span(c['text'], 'judge')} | {span(c['text'], 'perplexity', 1)} | "
                     f"{span(c['image'], 'concept_probability')} | {c['image'][-1]['distance']:.3f} | "
                     f"{span(c['voice'], 'pitch_hz', 0)} | {span(c['voice'], 'rate_phonemes_per_s', 1)} | "
                     f"{span(c['voice'], 'centroid_hz', 0)} | {span(c['voice'], 'wer')} |")
    return "\n".join(lines)


def write_table(text: str) -> None:
    begin, end = "<!-- crossmodal-table:begin -->", "<!-- crossmodal-table:end -->"
    doc = DOC.read_text() if DOC.exists() else f"{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="concepts to build (default: every spec)")
    parser.add_argument("--measure", action="store_true",
                        help="sweep intensities on the three models (one JSON per concept)")
    parser.add_argument("--plot", action="store_true", help="plots and the table from the sweeps")
    parser.add_argument("--recalibrate", choices=("text", "image", "voice"),
                        help="only re-run this modality's calibration of built concepts")
    parser.add_argument("--rebuild-image", action="store_true",
                        help="build the image realisations again, then calibrate them")
    parser.add_argument("--new-tokens", type=int, default=24, help="tokens per text in the sweep")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from polysteer.io import read_tensors
    specs = load_specs(args.names)
    if args.rebuild_image:
        recalibrate(specs, "image", rebuild=True)
    elif args.recalibrate:
        recalibrate(specs, args.recalibrate)
    elif args.measure:
        measure(specs, args.new_tokens)
    elif args.plot:
        out = collected(specs)
        plot(out, specs)
        _avatar_figure([read_tensors(MEASURED / f"{s['name']}.safetensors")["avatars"] for s in specs],
                       [s["name"] for s in specs])
        text = table(out, specs)
        write_table(text)
        print(text)
    else:
        build(specs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
