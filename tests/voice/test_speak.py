"""``polysteer speak`` on a tiny random voice saved as a folder (fast; phoneme input, no espeak)."""

from __future__ import annotations

import json
import wave

import pytest

import polysteer as ps
from polysteer.cli import main
from polysteer.plugins.voice.testing import tiny_vits_adapter
from polysteer.plugins.voice.vits import inference_state


@pytest.fixture()
def voice_folder(tmp_path):
    from safetensors.torch import save_file

    adapter = tiny_vits_adapter()
    folder = tmp_path / "tiny-voice"
    adapter.model.config.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in inference_state(adapter.model).items()},
              str(folder / "model.safetensors"))
    (folder / "polysteer-voice.json").write_text(json.dumps(
        {"phoneme_id_map": adapter.phoneme_id_map, "sample_rate": 16000}, ensure_ascii=False))
    return folder


@pytest.fixture()
def style_file(tmp_path, voice_folder):
    from polysteer.plugins.voice.adapter import VitsAdapter

    adapter = VitsAdapter.load(str(voice_folder))
    style = ps.testing.probe_style(adapter, "decoder.input", {"phonemes": "həlˈoʊ wˈɜːld"})
    style.components[0].dictionary.save(tmp_path / "probe-dict")
    path = tmp_path / "probe.yaml"
    path.write_text("name: probe\ncomponents:\n  - dictionary: probe-dict\n    feature: probe\n")
    return path


def _frames(path):
    with wave.open(str(path), "rb") as f:
        return f.getframerate(), f.getnframes(), f.readframes(f.getnframes())


def test_speak_writes_a_wav(tmp_path, voice_folder, plugin_manager):
    out = tmp_path / "hello.wav"
    assert main(["speak", "--voice", str(voice_folder), "--phonemes", "həlˈoʊ", "-o", str(out)]) == 0
    rate, frames, _ = _frames(out)
    assert rate == 16000 and frames > 0


def test_speak_compare_writes_both_prints_measures_and_draws(tmp_path, voice_folder, style_file,
                                                              plugin_manager, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "hello.wav"
    code = main(["speak", "--voice", str(voice_folder), "--phonemes", "--style", str(style_file),
                 "--intensity", "4", "--compare", "həlˈoʊ wˈɜːld", "-o", str(out)])
    assert code == 0
    plain = tmp_path / "hello.unsteered.wav"
    assert _frames(out)[2] != _frames(plain)[2]  # steered speech differs from unsteered
    assert (tmp_path / "hello.png").stat().st_size > 1000
    table = capsys.readouterr().out
    assert "pitch_median_hz" in table and "rate_phonemes_per_s" in table and "probe x 4" in table


def test_speak_at_zero_intensity_matches_plain(tmp_path, voice_folder, style_file, plugin_manager):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    main(["speak", "--voice", str(voice_folder), "--phonemes", "həlˈoʊ", "-o", str(a)])
    main(["speak", "--voice", str(voice_folder), "--phonemes", "--style", str(style_file),
          "--intensity", "0", "həlˈoʊ", "-o", str(b)])
    assert _frames(a)[2] == _frames(b)[2]
