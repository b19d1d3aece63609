"""Word error rate (normalisation, alignment, corpus rate), transcribe() and the voice_wer measure."""

from __future__ import annotations

import pytest
import torch

from polysteer import Generation
from polysteer.plugins.voice import wer
from polysteer.plugins.voice.wer import normalise, word_edits, word_error_rate


def test_normalisation_ignores_case_and_punctuation_but_keeps_words():
    assert normalise("Hello, World!  It’s 5 o'clock—\"really\".") == \
        ["hello", "world", "it's", "5", "o'clock", "really"]
    assert normalise("'quoted' well-known_thing") == ["quoted", "well", "known", "thing"]
    assert normalise(" ... ") == []


@pytest.mark.parametrize(("ref", "hyp", "edits"), [
    ("a b c", "a b c", 0),
    ("a b c", "a x c", 1),          # substitution
    ("a b c", "a c", 1),            # deletion
    ("a b c", "a b c d", 1),        # insertion
    ("a b c d", "b c d a", 2),      # a moved: one deletion, one insertion
    ("", "a b", 2),
    ("a b", "", 2),
])
def test_word_edits_is_levenshtein_over_words(ref, hyp, edits):
    assert word_edits(ref.split(), hyp.split()) == edits


def test_word_error_rate():
    assert word_error_rate("The cat sat on the mat.", "the cat sat on the mat") == 0.0
    assert word_error_rate("The cat sat on the mat.", "The cat sat on a hat!") == pytest.approx(2 / 6)
    assert word_error_rate("open the door", "open the door now please") == pytest.approx(2 / 3)
    assert word_error_rate("I have 5 apples", "I have five apples") == 0.25  # numbers as written
    # a corpus: all errors over all reference words, not the mean of sentence rates
    assert word_error_rate(["a b c d", "e"], ["a b c d", "x"]) == pytest.approx(1 / 5)


def test_word_error_rate_errors():
    with pytest.raises(ValueError, match="no words"):
        word_error_rate("...", "something")
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])


def test_transcribe_resamples_and_batches(monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("torchaudio")
    from polysteer.plugins.voice.whisper_testing import tiny_waveforms, tiny_whisper_adapter

    adapter = tiny_whisper_adapter()
    monkeypatch.setattr(wer, "judge", lambda name: adapter)
    waves = tiny_waveforms(samples=3)
    expected = adapter.transcribe(waves, max_new_tokens=4)
    assert wer.transcribe(waves, 16000, max_new_tokens=4, batch_size=2) == expected
    assert wer.transcribe(list(waves), 16000, max_new_tokens=4) == expected
    assert wer.transcribe(waves[0], 16000, max_new_tokens=4) == expected[:1]
    import torchaudio

    at_22k = torchaudio.functional.resample(waves, 16000, 22050)
    assert len(wer.transcribe(at_22k, 22050, max_new_tokens=4)) == 3


def test_voice_wer_measure_compares_with_the_texts_said(monkeypatch):
    heard = {}

    def fake_transcribe(waves, rate):
        heard["rate"], heard["n"] = rate, len(waves)
        return ["open the door", "turn on the lights"]

    monkeypatch.setattr(wer, "transcribe", fake_transcribe)
    said = Generation(torch.zeros(2, 100), "voice", lengths=torch.tensor([100, 60]),
                      texts=["Open the door.", "Turn on the light."], sample_rate=22050)
    assert wer.voice_wer(said, None) == pytest.approx(1 / 7)
    assert heard == {"rate": 22050, "n": 2}
    with pytest.raises(ValueError, match="texts"):  # phonemes or ids: no words to compare
        wer.voice_wer(Generation(torch.zeros(2, 100), "voice", sample_rate=22050), None)


def test_voice_wer_is_registered(plugin_manager):
    assert plugin_manager.measures.get("voice_wer") is wer.voice_wer
