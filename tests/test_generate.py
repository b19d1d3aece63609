"""``polysteer generate`` works on every registered model: the reference model, a third-party
adapter (the example plugin), and tiny text, image and voice models saved as local folders; its
aliases ``steer``, ``draw`` and ``speak`` give the same outputs."""

from __future__ import annotations

import json
import sys
import wave
from pathlib import Path

import pytest
import torch

import polysteer as ps
from polysteer.cli import main
from polysteer.testing import probe_style

ROOT = Path(__file__).resolve().parents[1]


def _style(tmp: Path, adapter, site: str, inputs) -> Path:
    """A one-component probe style at ``site`` saved as YAML (its dictionary beside it)."""
    style = probe_style(adapter, site, inputs)
    style.components[0].dictionary.save(tmp / "probe-dict")
    path = tmp / "probe.yaml"
    path.write_text(f"name: probe\ncomponents:\n  - dictionary: {tmp / 'probe-dict'}\n    feature: probe\n")
    return path


# -- the reference model and a third-party adapter ------------------------------------------------
def test_reference_generate_writes_and_describes(plugin_manager, tmp_path, capsys):
    assert main(["generate", "--model", "reference", "[3, 7, 1, 12]", "-o", str(tmp_path / "out")]) == 0
    plain = ps.load_model("reference").generate([[3, 7, 1, 12]]).outputs
    assert json.loads((tmp_path / "out.json").read_text()) == plain.tolist()
    assert capsys.readouterr().out.strip() == str(plain[0].tolist())


def test_reference_compare_is_unsteered_beside_steered(plugin_manager, tmp_path, capsys):
    code = main(["generate", "--model", "reference", "--style", "reference-demo", "--intensity", "1",
                 "--compare", "[3, 7, 1, 12]", "-o", str(tmp_path / "cmp.json")])
    assert code == 0
    model = ps.load_model("reference")
    plain = model.generate([[3, 7, 1, 12]]).outputs
    steered = model.generate([[3, 7, 1, 12]], style=ps.load_style("reference-demo"), intensity=1.0).outputs
    assert not torch.equal(plain, steered)
    assert json.loads((tmp_path / "cmp.unsteered.json").read_text()) == plain.tolist()
    assert json.loads((tmp_path / "cmp.json").read_text()) == steered.tolist()
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("unsteered") and "| reference-demo x 1" in header


def test_reference_grid_sweeps_from_zero(plugin_manager, tmp_path, capsys):
    assert main(["generate", "--model", "reference", "--style", "reference-demo", "--intensity", "2",
                 "--grid", "3", "-o", str(tmp_path / "g")]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["g.i0.json", "g.i1.json", "g.i2.json"]
    plain = ps.load_model("reference").generate(ps.load_model("reference").prepare_inputs(None)).outputs
    assert json.loads((tmp_path / "g.i0.json").read_text()) == plain.tolist()  # 0 is bit-exact
    assert "== reference-demo x 1" in capsys.readouterr().out


def test_a_third_party_adapter_works_without_any_cli_code(plugin_manager, register_plugin, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "polysteer-example"))
    import polysteer_example

    register_plugin(polysteer_example, "example")
    adapter = ps.load_model("example-conv")
    style = _style(tmp_path, adapter, "blocks.1.residual", adapter.prepare_inputs(None))
    assert main(["generate", "--model", "example-conv", "--style", str(style), "--intensity", "3",
                 "--compare", "-o", str(tmp_path / "conv")]) == 0
    out = capsys.readouterr().out
    assert "unsteered" in out and "probe x 3" in out and "centroid bin" in out
    plain = json.loads((tmp_path / "conv.unsteered.json").read_text())
    assert plain == adapter.generate(adapter.prepare_inputs(None)).outputs.tolist()
    assert plain != json.loads((tmp_path / "conv.json").read_text())
    del sys.modules["polysteer_example"]


# -- text -----------------------------------------------------------------------------------------
@pytest.fixture
def text_folder(tmp_path, plugin_manager):
    pytest.importorskip("transformers")
    from polysteer.plugins.text.testing import tiny_text_adapter

    adapter = tiny_text_adapter("llama")
    adapter.model.save_pretrained(tmp_path / "tiny-llama")
    adapter.tokenizer.save_pretrained(tmp_path / "tiny-llama")
    return tmp_path / "tiny-llama"


def test_text_generate_from_a_local_folder_streams_and_writes(text_folder, tmp_path, capsys):
    from polysteer.plugins.text.adapter import TransformersAdapter

    assert main(["generate", "--model", str(text_folder), "--max-new-tokens", "5", "the cat",
                 "-o", str(tmp_path / "story.txt")]) == 0
    adapter = TransformersAdapter.load(str(text_folder))
    expected = adapter.texts(adapter.generate(["the cat"], max_new_tokens=5))[0]
    assert capsys.readouterr().out.strip() == expected  # streamed as it was generated
    assert (tmp_path / "story.txt").read_text().strip() == expected


def test_text_compare_matches_steer(text_folder, tmp_path, capsys):
    from polysteer.plugins.text.adapter import TransformersAdapter

    adapter = TransformersAdapter.load(str(text_folder))
    style = _style(tmp_path, adapter, "blocks.1.resid_post", ["the cat sat"])
    common = ["--model", str(text_folder), "--style", str(style), "--intensity", "8", "--compare",
              "--max-new-tokens", "6"]
    assert main(["generate", *common, "the cat"]) == 0
    shown = capsys.readouterr().out
    assert main(["steer", *common, "the cat"]) == 0
    assert capsys.readouterr().out == shown
    plain = adapter.texts(adapter.generate(["the cat"], max_new_tokens=6))[0]
    steered = adapter.texts(adapter.generate(["the cat"], style=ps.load_style(style), intensity=8.0,
                                             max_new_tokens=6))[0]
    assert plain != steered
    first = shown.splitlines()[0]
    assert first.startswith("unsteered") and "| probe x 8" in first
    assert plain.split()[0] in shown and steered.split()[0] in shown


# -- image ----------------------------------------------------------------------------------------
def test_image_generate_compare_writes_one_side_by_side_png(tmp_path, plugin_manager, capsys):
    pytest.importorskip("diffusers")
    PIL = pytest.importorskip("PIL.Image")
    from polysteer.plugins.image.adapter import DiffusersAdapter
    from polysteer.plugins.image.avatars import save_avatar_pipeline
    from polysteer.plugins.image.measures import as_images
    from polysteer.plugins.image.testing import tiny_avatar_pipeline

    pipe = tiny_avatar_pipeline()
    save_avatar_pipeline(tmp_path / "model", pipe.unet, pipe.conditioner, {"name": "tiny"},
                         dtype=torch.float32)
    adapter = DiffusersAdapter.load(str(tmp_path / "model"))
    style = _style(tmp_path, adapter, "mid", 1)
    assert main(["generate", "--model", str(tmp_path / "model"), "--style", str(style), "--intensity", "4",
                 "--seed", "3", "--steps", "3", "--scale", "1", "--compare", "-o",
                 str(tmp_path / "face.png")]) == 0
    picture = as_images(PIL.open(tmp_path / "face.png"))
    assert picture.shape == (1, 3, 16, 33)
    plain = adapter.generate(1, seed=3, num_inference_steps=3).outputs
    assert (picture[..., :16] - plain).abs().max() <= 1 / 255 + 1e-6
    assert (picture[..., 17:] - plain).abs().mean() > 0.01
    assert "16x16 image" in capsys.readouterr().out


# -- voice ----------------------------------------------------------------------------------------
def _frames(path: Path) -> bytes:
    with wave.open(str(path), "rb") as f:
        return f.readframes(f.getnframes())


def test_voice_generate_compare_writes_both_wavs_and_measures(tmp_path, plugin_manager, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("onnx")  # the voice extra (absent in the lower-bounds stage)
    pytest.importorskip("matplotlib")
    from safetensors.torch import save_file

    from polysteer.plugins.voice.adapter import VitsAdapter
    from polysteer.plugins.voice.testing import tiny_vits_adapter
    from polysteer.plugins.voice.vits import inference_state

    tiny = tiny_vits_adapter()
    folder = tmp_path / "tiny-voice"
    tiny.model.config.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in inference_state(tiny.model).items()},
              str(folder / "model.safetensors"))
    (folder / "polysteer-voice.json").write_text(json.dumps(
        {"phoneme_id_map": tiny.phoneme_id_map, "sample_rate": 16000}, ensure_ascii=False))
    adapter = VitsAdapter.load(str(folder))
    style = _style(tmp_path, adapter, "decoder.input", {"phonemes": "həlˈoʊ wˈɜːld"})
    common = ["--style", str(style), "--intensity", "4", "--compare", "--phonemes"]
    assert main(["generate", "--model", str(folder), *common, "həlˈoʊ", "-o", str(tmp_path / "g.wav")]) == 0
    table = capsys.readouterr().out
    assert "pitch_median_hz" in table and "rate_phonemes_per_s" in table and "probe x 4" in table
    assert main(["speak", "--voice", str(folder), *common, "həlˈoʊ", "-o", str(tmp_path / "s.wav")]) == 0
    assert _frames(tmp_path / "g.wav") == _frames(tmp_path / "s.wav")
    assert _frames(tmp_path / "g.unsteered.wav") == _frames(tmp_path / "s.unsteered.wav")
    plain = adapter.generate({"phonemes": ["həlˈoʊ"]}, seed=0)
    assert _frames(tmp_path / "g.unsteered.wav") != _frames(tmp_path / "g.wav")
    assert (tmp_path / "g.png").stat().st_size > 1000
    adapter.save_outputs(plain, tmp_path / "direct")
    assert _frames(tmp_path / "direct.wav") == _frames(tmp_path / "g.unsteered.wav")


def test_whisper_generate_reads_wav_inputs_from_a_local_folder(tmp_path, plugin_manager, capsys):
    pytest.importorskip("transformers")
    from polysteer.plugins.voice.adapter import write_wav
    from polysteer.plugins.voice.whisper_testing import tiny_waveforms, tiny_whisper_adapter

    tiny = tiny_whisper_adapter()
    tiny.model.save_pretrained(tmp_path / "tiny-whisper")
    tiny.processor.save_pretrained(tmp_path / "tiny-whisper")
    waves = tiny_waveforms(samples=1)
    write_wav(tmp_path / "a.wav", waves[0], 16000)
    assert main(["generate", "--model", str(tmp_path / "tiny-whisper"), str(tmp_path / "a.wav"),
                 "-o", str(tmp_path / "a.txt")]) == 0
    expected = tiny.prepare_inputs([str(tmp_path / "a.wav")])
    transcript = tiny.describe_outputs(tiny.generate(expected))[0]
    assert (tmp_path / "a.txt").read_text().strip() == transcript.strip()
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "tiny-whisper"), "missing.wav"]) == 2
    assert capsys.readouterr().err.startswith("error: no such audio file: missing.wav. Pass")
