"""The Whisper adapter on a tiny random Whisper: conformance, sites, the step clock, encoder steering."""

import pytest
import torch

import polysteer as ps
from polysteer.testing import AdapterConformance, probe_style

pytest.importorskip("transformers")
pytest.importorskip("torchaudio")

from polysteer.plugins.voice.whisper_testing import tiny_waveforms, tiny_whisper_adapter  # noqa: E402

ENC, DEC = "encoder.layers.1.resid_post", "decoder.layers.1.resid_post"
FRAMES = 50  # the tiny model's encoder positions (1 s window)


class TestTinyWhisper(AdapterConformance):
    """The shared suite; its two single-stack accounting checks are replaced below by
    encoder-decoder versions (the encoder pass is a step whose positions no decoder site sees)."""

    generate_kwargs = {"max_new_tokens": 5}
    max_sites_checked = None

    def make_adapter(self):
        return tiny_whisper_adapter()

    def make_inputs(self):
        return tiny_waveforms()

    def steering_site(self, adapter):
        return DEC

    def test_prefill_decode_accounting(self):
        with ps.steer(self.adapter, None, capture=[ENC, DEC]) as run:
            out = self._generate()
        history = run.clock.history
        assert [s.phase for s in history] == ["prefill", "prefill"] + ["decode"] * 4
        encoder, decoder = history[0], history[1:]
        assert (encoder.offset, encoder.new, encoder.prompt_length) == (0, FRAMES, FRAMES)
        assert run.captured(ENC).shape == (2, FRAMES, 32)
        # decoder: the forced prefix, then one token per step at the next position
        prefix = decoder[0].new
        assert [(s.offset, s.new) for s in decoder] == [(0, prefix)] + [(prefix + i, 1) for i in range(4)]
        assert run.captured(DEC).shape == (2, sum(s.new for s in decoder), 32)
        assert out.outputs.shape == (2, 5) and out.lengths.max() <= 5

    def test_generated_only_steering_leaves_the_prompt_alone(self):
        with ps.steer(self.adapter, None, capture=[ENC, DEC]) as plain_run:
            self._generate()
        style = self._style(positions="generated")
        with ps.steer(self.adapter, style, intensity=self.strong_intensity, capture=[ENC, DEC]) as run:
            self._generate()
        prefix = run.clock.history[1].new
        plain, steered = plain_run.captured(DEC), run.captured(DEC)
        assert torch.equal(plain[:, :prefix], steered[:, :prefix]), "the forced prefix was steered"
        assert not torch.equal(plain[:, prefix:], steered[:, prefix:]), "generated tokens were not steered"
        assert torch.equal(plain_run.captured(ENC), run.captured(ENC)), "the audio is never 'generated'"


def test_sites_cover_both_stacks_in_forward_order():
    adapter = tiny_whisper_adapter()
    sites = adapter.sites()
    assert sites[:4] == [f"encoder.layers.0.{k}" for k in ("resid_pre", "attn_out", "mlp_out", "resid_post")]
    assert "decoder.layers.1.cross_out" in sites and len(sites) == 2 * 4 + 2 * 5
    assert adapter.bind("decoder.layers.0.resid_pre").hook == "input"
    cross = adapter.model.model.decoder.layers[0].encoder_attn
    assert adapter.bind("decoder.layers.0.cross_out").module is cross


@pytest.mark.parametrize("site", ["encoder.layers.2.resid_post", "encoder.layers.0.cross_out",
                                  "decoder.layer.0.resid_post", "blocks.0.resid_post"])
def test_bad_sites_name_the_valid_ones(site):
    valid = (r"encoder\.layers\.0\.\.1\.\{resid_pre,attn_out,mlp_out,resid_post\}, "
             r"decoder\.layers\.0\.\.1\.\{resid_pre,attn_out,cross_out,mlp_out,resid_post\}")
    with pytest.raises(ps.UnknownSiteError, match=valid):
        tiny_whisper_adapter().bind(site)


def test_residual_sites_add_up():
    """resid_post = resid_pre + attn_out + cross_out + mlp_out in a decoder layer (eval mode)."""
    adapter = tiny_whisper_adapter()
    kinds = ("resid_pre", "attn_out", "cross_out", "mlp_out", "resid_post")
    sites = [f"decoder.layers.1.{k}" for k in kinds]
    with ps.steer(adapter, None, capture=sites) as run:
        adapter.generate(tiny_waveforms(), max_new_tokens=3)
    pre, attn, cross, mlp, post = (run.captured(s) for s in sites)
    torch.testing.assert_close(pre + attn + cross + mlp, post, atol=1e-5, rtol=1e-5)


def test_encoder_steering_changes_the_transcript_and_respects_a_frame_span(plugin_manager):
    adapter, waves = tiny_whisper_adapter(), tiny_waveforms()
    plain = adapter.generate(waves, max_new_tokens=5).outputs
    style = probe_style(adapter, ENC, waves)
    with ps.steer(adapter, style, intensity=0.0):
        assert torch.equal(adapter.generate(waves, max_new_tokens=5).outputs, plain)
    with ps.steer(adapter, style, intensity=8.0):
        assert not torch.equal(adapter.generate(waves, max_new_tokens=5).outputs, plain)
    # a span mask over the audio frames: only the last third of the window is changed
    late = probe_style(adapter, "encoder.layers.0.resid_post", waves,
                       positions={"kind": "span", "start": 2 / 3, "end": 1.0})
    with ps.steer(adapter, None, capture=["encoder.layers.0.resid_post"]) as base:
        adapter.generate(waves, max_new_tokens=2)
    with ps.steer(adapter, late, intensity=2.0, capture=["encoder.layers.0.resid_post"]) as run:
        adapter.generate(waves, max_new_tokens=2)
    site = "encoder.layers.0.resid_post"
    changed = (run.captured(site) != base.captured(site)).any(-1)
    assert not changed[:, : FRAMES * 2 // 3].any() and changed[:, FRAMES * 2 // 3 + 1:].all()


def test_decode_steps_are_each_steered_once(plugin_manager):
    """A window over the second half of decoding changes only tokens produced there."""
    adapter, waves = tiny_whisper_adapter(), tiny_waveforms()
    plain = adapter.generate(waves, max_new_tokens=8).outputs
    style = probe_style(adapter, DEC, waves, schedule={"kind": "window", "start": 0.5, "end": 1.0})
    with ps.steer(adapter, style, intensity=6.0) as run:
        steered = adapter.generate(waves, max_new_tokens=8).outputs
    progress = [s.progress for s in run.clock.history[1:]]
    first = next(i for i, p in enumerate(progress) if p >= 0.5)  # decoder pass i makes token i
    assert 0 < first < 8 and steered.shape == plain.shape == (2, 8)
    assert torch.equal(steered[:, :first], plain[:, :first])
    assert not torch.equal(steered[:, first:], plain[:, first:])


def test_beams_map_rows_to_samples():
    adapter = tiny_whisper_adapter()
    with ps.steer(adapter, None, capture=[DEC]) as run:
        out = adapter.generate(tiny_waveforms(), max_new_tokens=3, num_beams=2).outputs
    assert out.shape[0] == 2
    assert run.clock.history[0].rows.sample.tolist() == [0, 1]  # the encoder sees each sample once
    assert run.clock.history[1].rows.sample.tolist() == [0, 0, 1, 1]
    assert run.captured(DEC).shape[0] == 4


def test_inputs_any_rate_list_or_features_agree():
    torchaudio = pytest.importorskip("torchaudio")
    adapter, waves = tiny_whisper_adapter(), tiny_waveforms()
    plain = adapter.generate(waves, max_new_tokens=4).outputs
    assert torch.equal(adapter.generate(list(waves), max_new_tokens=4).outputs, plain)
    feats = adapter.features(waves)
    assert torch.equal(adapter.generate({"input_features": feats}, max_new_tokens=4).outputs, plain)
    resampled = torchaudio.functional.resample(waves, 16000, 8000)
    assert adapter.features(resampled, sample_rate=8000).shape == feats.shape
    with pytest.raises(ValueError, match="longer than Whisper's window of 1 s"):
        adapter.generate(torch.zeros(1, 20000), max_new_tokens=2)


def test_texts_and_saved_outputs(tmp_path):
    adapter = tiny_whisper_adapter()
    out = adapter.generate(tiny_waveforms(), max_new_tokens=4)
    out.check()
    texts = adapter.texts(out)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert out.texts == texts == adapter.texts(out.outputs) and out.modality == "asr"
    assert out.extras["audio_seconds"].shape == (2,)
    (path,) = adapter.save_outputs(out, tmp_path / "run")
    assert path.read_text().splitlines() == texts


def test_registered_adapter_kind(plugin_manager):
    entry = plugin_manager.adapters.get("whisper")
    assert callable(entry)


def test_experiment_inputs_are_wav_files(tmp_path):
    import wave

    from polysteer.plugins.voice.whisper_adapter import read_wav

    adapter, waves = tiny_whisper_adapter(), tiny_waveforms(seconds=0.25)
    paths = []
    for i, (rate, channels) in enumerate([(16000, 1), (8000, 2)]):
        x = torch.nn.functional.interpolate(waves[i][None, None], scale_factor=rate / 16000)[0, 0]
        pcm = (x.clamp(-1, 1) * 32767).round().to(torch.int16)
        pcm = pcm.repeat_interleave(channels)  # stereo: both channels the same
        path = tmp_path / f"{i}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(channels)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(pcm.numpy().tobytes())
        paths.append(str(path))
    wave0, rate0 = read_wav(paths[0])
    assert rate0 == 16000 and (wave0 - waves[0]).abs().max() < 1e-4
    inputs = adapter.prepare_inputs(paths)
    assert [w.shape[0] for w in inputs] == [4000, 4000]  # the 8 kHz stereo file resampled, mixed down
    assert adapter.generate(inputs, max_new_tokens=3).outputs.shape == (2, 3)
    with pytest.raises(ValueError, match="needs audio"):
        adapter.prepare_inputs(None)
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(ValueError, match="not a PCM WAV file"):
        read_wav(tmp_path / "bad.wav")


def test_cached_and_uncached_steering_agree(plugin_manager):
    """Under the KV cache each decode step sees one token; without it, the whole sequence again:
    the clock's offsets make both steer the same positions."""
    adapter, waves = tiny_whisper_adapter(), tiny_waveforms()
    style = probe_style(adapter, "decoder.layers.1.resid_pre", waves)
    outs = []
    for use_cache in (True, False):
        with ps.steer(adapter, style, intensity=2.0, capture=[DEC]) as run:
            outs.append(adapter.generate(waves, max_new_tokens=6, use_cache=use_cache).outputs)
        assert run.captured(DEC).shape == (2, 2 + 5, 32)
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], adapter.generate(waves, max_new_tokens=6).outputs)


def test_int16_pcm_is_scaled_like_float():
    adapter, waves = tiny_whisper_adapter(), tiny_waveforms()
    pcm = (waves * 32768).round().clamp(-32768, 32767).to(torch.int16)
    torch.testing.assert_close(adapter.features(pcm), adapter.features(waves), atol=5e-3, rtol=0)


def test_encode_runs_the_encoder_alone_as_one_step(plugin_manager):
    adapter, waves = tiny_whisper_adapter(), tiny_waveforms()
    with ps.steer(adapter, None, capture=[ENC]) as run:
        out = adapter.encode(waves)
        assert adapter.encode(waves).shape == out.shape  # a second call is a new generation
    assert out.shape == (2, FRAMES, 32)
    assert [(s.phase, s.new) for s in run.clock.history] == [("single", FRAMES)]
    assert len(run.clock.generations) == 2
    assert run.captured(ENC).shape == (2, FRAMES, 32)
    with ps.steer(adapter, None, capture=[ENC]) as full:
        adapter.generate(waves, max_new_tokens=2)
    assert torch.equal(full.captured(ENC), run.captured(ENC))


def test_long_audio_is_cut_at_its_quietest_moments_into_window_sized_pieces():
    from polysteer.plugins.voice.whisper_adapter import quiet_cuts

    tone = torch.sin(torch.arange(900) * 0.3)
    wave = torch.cat([tone, torch.zeros(100)] * 5)  # 5 "words" of 900 samples, each then 100 silent
    pieces = quiet_cuts(wave, window=2500, search=1000, frame=50)
    assert torch.equal(torch.cat(pieces), wave) and all(len(p) <= 2500 for p in pieces)
    cuts = torch.tensor([len(p) for p in pieces[:-1]]).cumsum(0)
    assert len(pieces) == 3 and (wave[cuts] == 0).all()  # cut inside the silences, never in a word
    assert len(quiet_cuts(wave[:2400], window=2500, search=1000, frame=50)) == 1


def test_transcribe_long_transcribes_window_sized_pieces_in_batches(monkeypatch):
    adapter = tiny_whisper_adapter()
    calls = []

    def transcribe(pieces, sample_rate, **kwargs):
        calls.append((len(pieces), sample_rate, kwargs))
        return [str(len(p)) for p in pieces]

    monkeypatch.setattr(adapter, "transcribe", transcribe)
    window = adapter.processor.feature_extractor.n_samples
    long = torch.randn(2 * window + 100, generator=torch.Generator().manual_seed(0))
    sizes = [int(t) for t in adapter.transcribe_long(long, batch_size=2).split()]
    assert sum(sizes) == len(long) and max(sizes) <= window and min(sizes[:-1]) >= window // 2
    assert [n for n, _, _ in calls] == [2] * (len(sizes) // 2) + [1] * (len(sizes) % 2)
    assert {rate for _, rate, _ in calls} == {16000}
    assert calls[0][2]["max_new_tokens"] == adapter.model.config.max_target_positions // 2
