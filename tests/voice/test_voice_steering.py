"""Steering the embedded Piper voice with the shipped voice styles (slow: real weights, espeak,
Whisper tiny.en as the intelligibility judge)."""

from __future__ import annotations

import pytest
import torch

import polysteer as ps
from polysteer.plugins.voice.features import F0_RANGE, HELD_OUT
from polysteer.plugins.voice.measures import pitch

pytestmark = pytest.mark.slow

VOICE_STYLES = ["joe-higher-pitch", "joe-higher-pitch-end", "joe-slow", "joe-bright", "joe-question",
                "joe-excited"]
SENTENCE = "Let me tell you a story about a small village."


@pytest.fixture(scope="module")
def voice():
    pytest.importorskip("espeakng_loader", reason="pip install espeakng-loader (the voice extra)")
    torch.set_num_threads(1)
    return ps.load_model("joe")


def _median_pitch(adapter, waves) -> float:
    values = [pitch(w, adapter.sample_rate, **F0_RANGE).median.item() for w in waves]
    return sum(values) / len(values)


def test_higher_pitch_rises_monotonically_and_stays_intelligible(voice):
    from polysteer.plugins.voice.wer import transcribe, word_error_rate

    style = ps.load_style("joe-higher-pitch")
    pitches, wers = [], []
    for intensity in (0.0, 1 / 3, 2 / 3, 1.0):
        with ps.steer(voice, style, intensity=intensity):
            waves = voice.waveforms(voice.generate(list(HELD_OUT)))
        pitches.append(_median_pitch(voice, waves))
        wers.append(word_error_rate(list(HELD_OUT), transcribe(waves, voice.sample_rate)))
    assert all(b > a for a, b in zip(pitches, pitches[1:], strict=False)), pitches
    assert pitches[-1] - pitches[0] > 20, pitches  # measured: 89 -> 124 Hz
    assert all(w <= wers[0] + 0.05 for w in wers), wers  # within 5 points of unsteered


@pytest.mark.parametrize("name", VOICE_STYLES)
def test_zero_intensity_is_bit_identical(voice, name):
    plain = voice.generate(SENTENCE).outputs
    with ps.steer(voice, ps.load_style(name), intensity=0.0):
        steered = voice.generate(SENTENCE).outputs
    assert torch.equal(plain, steered)


def test_last_third_span_changes_only_the_end(voice):
    plain = voice.generate(SENTENCE).outputs[0]
    with ps.steer(voice, ps.load_style("joe-higher-pitch-end"), intensity=1.0):
        steered = voice.generate(SENTENCE).outputs[0]
    n = len(plain)
    assert torch.equal(plain[: n // 3], steered[: n // 3])  # measured: the first 40% is untouched
    end = slice(n * 2 // 3, n)
    assert _median_pitch(voice, [steered[end]]) > _median_pitch(voice, [plain[end]]) + 20


def test_question_and_slow_styles_do_what_they_say(voice):
    plain_speech = voice.generate(SENTENCE)
    plain_rate = voice.speaking_rate(plain_speech).item()
    plain = plain_speech.outputs[0]
    with ps.steer(voice, ps.load_style("joe-question"), intensity=0.75):
        asked = voice.generate(SENTENCE).outputs[0]
    end = lambda w: w[len(w) * 2 // 3:]  # noqa: E731
    assert _median_pitch(voice, [end(asked)]) > _median_pitch(voice, [end(plain)]) + 15
    with ps.steer(voice, ps.load_style("joe-slow"), intensity=0.5):
        slow = voice.generate(SENTENCE)
    assert voice.speaking_rate(slow).item() < 0.85 * plain_rate


def test_shipped_dictionaries_match_the_converted_voice(voice):
    for name in ("joe-pitch", "joe-brightness", "joe-rate", "joe-intonation"):
        dictionary = ps.resolve_dictionary(name)
        dictionary.check_compatible(voice.model_fingerprint, dictionary.info.site,
                                    voice.bind(dictionary.info.site).channels)
        assert dictionary.info.details["effect"], name


def test_shipped_decoder_sae_reconstructs_new_speech_and_its_pitch_label_holds(voice):
    from polysteer.plugins.voice.sae import frame_measures, harvest_frames

    sae = ps.resolve_dictionary("joe-decoder-sae")
    sae.check_compatible(voice.model_fingerprint, "decoder.input", 192)
    acts, _ = harvest_frames(voice, HELD_OUT[2:], seeds=(3,), progress=False)
    with torch.no_grad():
        recon = sae.decode(sae.encode(acts))
    fve = 1 - (acts - recon).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()
    assert fve > 0.85  # measured 0.93 on the training frames
    evidence = sae.info.details["labels"]  # the build's measured effects, per labelled feature
    label = max((lab for lab in evidence if lab.startswith("pitch+")),
                key=lambda lab: evidence[lab]["change"])
    style = ps.Style.from_dict({"name": "sae-pitch", "components": [
        {"dictionary": "joe-decoder-sae", "feature": label}]})
    pitches = []
    for intensity in (0.0, 0.5):
        with ps.steer(voice, style, intensity=intensity):
            speech = voice.generate(HELD_OUT[2], seed=0)
        f0 = frame_measures(voice, speech.rows()[0][None], int(speech.frames[0]))["pitch"]
        pitches.append(f0.nanmean().item())
    assert pitches[1] > pitches[0] + 10, pitches
