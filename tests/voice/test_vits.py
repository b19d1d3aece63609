"""The VITS adapter on a tiny random voice: conformance, sites, inputs, outputs, noise."""

from __future__ import annotations

import wave

import pytest
import torch

import polysteer as ps
from polysteer.plugins.voice.adapter import VitsAdapter
from polysteer.plugins.voice.testing import tiny_vits_adapter
from polysteer.plugins.voice.vits import ResBlock2, build_vits, inference_state, load_vits_folder
from polysteer.testing import AdapterConformance, probe_style

PHRASES = {"phonemes": ["həlˈoʊ wˈɜːld.", "ðɪs ɪz ɐ tˈɛst, ɪzənt ɪt?"]}


class TestTinyVits(AdapterConformance):
    strong_intensity = 8.0

    def make_adapter(self):
        return tiny_vits_adapter()

    def make_inputs(self):
        return PHRASES

    def steering_site(self, adapter):
        return "decoder.input"


def _adapter(**kw):
    return tiny_vits_adapter(**kw)


def test_sites_cover_every_stage_in_forward_order():
    sites = _adapter().sites()
    assert sites[:2] == ["text_encoder.layers.0", "text_encoder.layers.1"]
    assert sites[2:] == ["text_encoder.project", "duration_predictor.input", "flow.0", "flow.1",
                         "decoder.input", "decoder.conv_pre", "decoder.upsample.0", "decoder.upsample.1"]


def test_positions_are_phonemes_then_frames_then_upsampled_frames():
    adapter = _adapter()
    with ps.steer(adapter, None, capture=adapter.sites()) as run:
        speech = adapter.generate({"phonemes": "həlˈoʊ"})
    phonemes = adapter.encode({"phonemes": "həlˈoʊ"})[0].shape[1]
    frames = int(speech.frames[0])
    assert run.captured("text_encoder.layers.1").shape == (1, phonemes, 16)
    assert run.captured("duration_predictor.input").shape == (1, phonemes, 16)
    assert run.captured("decoder.input").shape == (1, frames, 8)
    assert run.captured("decoder.upsample.0").shape == (1, frames * 4, 8)
    assert run.captured("decoder.upsample.1").shape == (1, frames * 16, 4)
    assert int(speech.lengths[0]) == frames * 16
    assert speech.durations.shape == (1, phonemes) and int(speech.durations.sum()) == frames


def test_last_third_span_leaves_the_start_of_the_utterance_alone():
    adapter = _adapter()
    site = "decoder.input"
    style = probe_style(adapter, site, PHRASES, positions={"kind": "span", "start": 2 / 3})
    with ps.steer(adapter, None, capture=[site]) as plain_run:
        adapter.generate(PHRASES)
    with ps.steer(adapter, style, intensity=4.0, capture=[site]) as run:
        adapter.generate(PHRASES)
    plain, steered = plain_run.captured(site), run.captured(site)
    third = plain.shape[1] // 3
    assert torch.equal(plain[:, : 2 * third - 1], steered[:, : 2 * third - 1])
    assert not torch.equal(plain[:, -third:], steered[:, -third:])


def test_a_seed_fixes_the_noise_and_zero_scales_remove_it():
    adapter = _adapter()
    a, b = adapter.generate(PHRASES, seed=1).outputs, adapter.generate(PHRASES, seed=1).outputs
    c = adapter.generate(PHRASES, seed=2).outputs
    assert torch.equal(a, b) and not torch.equal(a, c)
    quiet = [adapter.generate(PHRASES, seed=s, noise_scale=0.0, noise_w=0.0).outputs for s in (1, 2)]
    assert torch.equal(quiet[0], quiet[1])


def test_length_scale_stretches_durations():
    adapter = _adapter()
    short = adapter.generate(PHRASES, noise_w=0.0)
    long = adapter.generate(PHRASES, noise_w=0.0, length_scale=2.0)
    assert (long.frames > short.frames).all() and (long.seconds > short.seconds).all()


def test_inputs_phonemes_ids_and_tensors_agree():
    adapter = _adapter()
    ids, lengths = adapter.encode({"phonemes": "həlˈoʊ"})
    assert ids[0, 0] == adapter.phoneme_id_map["^"][0] and ids[0, -1] == adapter.phoneme_id_map["$"][0]
    assert ids[0, 1::2].tolist() == [0] * (len(ids[0]) // 2)  # a pad after every symbol
    by_ids = adapter.generate({"ids": ids[0].tolist()}, seed=3).outputs
    by_tensor = adapter.generate(ids, seed=3).outputs
    by_phonemes = adapter.generate({"phonemes": "həlˈoʊ"}, seed=3).outputs
    assert torch.equal(by_ids, by_tensor) and torch.equal(by_ids, by_phonemes)


def test_batch_rows_are_cut_to_their_lengths():
    adapter = _adapter()
    out = adapter.generate(PHRASES)
    out.check()
    rows = adapter.waveforms(out)
    assert [len(r) for r in rows] == out.lengths.tolist()
    short = int(out.lengths.argmin())
    assert torch.all(out.outputs[short, int(out.lengths[short]):] == 0)
    assert out.texts is None and out.sample_rate == adapter.sample_rate  # phonemes have no words


def test_save_outputs_writes_wavs(tmp_path):
    adapter = _adapter()
    speech = adapter.generate(PHRASES)
    paths = adapter.save_outputs(speech, tmp_path / "speech")
    assert [p.name for p in paths] == ["speech-0.wav", "speech-1.wav"]
    with wave.open(str(paths[1]), "rb") as f:
        assert f.getframerate() == 16000 and f.getnframes() == int(speech.lengths[1])


def test_unknown_site_and_bad_inputs_are_clear_errors():
    adapter = _adapter()
    with pytest.raises(ps.SteeringError, match="decoder.input"):
        adapter.bind("decoder.inptu")
    with pytest.raises(TypeError, match="phonemes"):
        adapter.generate([3.5])


def test_resblock_type_2_and_a_saved_folder_round_trip(tmp_path):
    from safetensors.torch import save_file

    adapter = _adapter()
    assert all(isinstance(b, ResBlock2) for b in adapter.model.decoder.resblocks)
    adapter.model.config.save_pretrained(tmp_path)
    save_file({k: v.contiguous() for k, v in inference_state(adapter.model).items()},
              str(tmp_path / "model.safetensors"))
    model, extra = load_vits_folder(tmp_path)
    assert extra == {}
    again = VitsAdapter(model, "again", phoneme_id_map=adapter.phoneme_id_map)
    assert torch.equal(again.generate(PHRASES).outputs, adapter.generate(PHRASES).outputs)


def test_transformers_resblock_type_1_voices_work_too():
    adapter = tiny_vits_adapter(resblock_type="1", stochastic=False)
    assert not any(isinstance(b, ResBlock2) for b in adapter.model.decoder.resblocks)
    assert adapter.generate(PHRASES).outputs.shape[0] == 2


def test_registered_as_vits(plugin_manager):
    assert "vits" in plugin_manager.adapters
    assert build_vits  # the builder is public for users' own checkpoints


def test_a_transformers_vits_folder_loads_with_weight_norm_folded(tmp_path):
    """A folder saved by transformers (weight-norm parametrised, posterior encoder included)."""
    from transformers import VitsModel

    from polysteer.plugins.voice.testing import tiny_vits_config
    from polysteer.plugins.voice.vits import synthesize

    torch.manual_seed(0)
    original = VitsModel(tiny_vits_config(resblock_type="1")).eval()
    original.save_pretrained(tmp_path)
    model, _ = load_vits_folder(tmp_path)
    ids = torch.tensor([[1, 0, 5, 0, 9, 0, 12, 0, 2]])
    kwargs = {"noise_scale": 0.0, "noise_scale_duration": 0.0, "length_scale": 1.0}
    expected = synthesize(original, ids, torch.tensor([9]), **kwargs).waveform
    got = synthesize(model, ids, torch.tensor([9]), **kwargs).waveform
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_speaking_rate_counts_phonemes_per_second_of_predicted_durations():
    from polysteer.plugins.voice.measures import speaking_rate, voice_speaking_rate

    adapter = _adapter()
    speech = adapter.generate({"phonemes": ["ab", "ab ab"]}, noise_w=0.0)
    rate = adapter.speaking_rate(speech)
    d = speech.durations
    ids = speech.extras["ids"]
    letters = torch.isin(ids, torch.tensor([adapter.phoneme_id_map[c][0] for c in "ab"]))
    expected = letters.sum(-1) / (d.sum(-1) * adapter.hop / adapter.sample_rate)
    assert torch.allclose(rate, expected)
    slow = speaking_rate(d * 2, adapter.hop / adapter.sample_rate, letters)
    assert torch.allclose(slow, rate / 2)  # twice the frames per phoneme: half the rate
    assert voice_speaking_rate(speech, None) == pytest.approx(rate.mean().item())
    slower = adapter.generate({"phonemes": ["ab", "ab ab"]}, noise_w=0.0, length_scale=2.0)
    assert (adapter.speaking_rate(slower) < rate).all()
    assert torch.equal(adapter.speaking_rate(speech), rate)  # the earlier record still reads the same
