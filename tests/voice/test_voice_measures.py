"""Voice measures on synthetic audio: pitch of known tones, brightness, noisiness, loudness, silence."""

import math
import os
import subprocess
import sys

import pytest
import torch

import polysteer
from polysteer import Generation
from polysteer.plugins.voice import measures as vm

SR = 16000
T = torch.arange(SR // 2) / SR  # 0.5 s


def _sine(freq: float, amp: float = 0.5) -> torch.Tensor:
    return amp * torch.sin(2 * math.pi * freq * T)


def _saw(freq: float, amp: float = 0.5) -> torch.Tensor:
    return amp * (2 * ((freq * T + 0.25) % 1.0) - 1)


def _noise(amp: float = 0.3) -> torch.Tensor:
    return amp * torch.randn(T.numel(), generator=torch.Generator().manual_seed(0))


SILENCE = torch.zeros(T.numel())


@pytest.mark.parametrize("freq", [110.0, 220.0, 440.0])
def test_pitch_of_tones_within_3_percent(freq):
    p = vm.pitch(torch.stack([_sine(freq), _saw(freq)]), SR)
    assert p.median.shape == (2,)
    assert torch.allclose(p.median, torch.tensor(freq), rtol=0.03), p.median
    assert (p.range < 0.03 * freq).all() and (p.voiced_fraction == 1).all()


def test_pitch_range_of_a_glide():
    t = torch.arange(SR) / SR
    glide = 0.5 * torch.sin(2 * math.pi * (200 * t + 50 * t**2))  # 200 -> 300 Hz over 1 s
    p = vm.pitch(glide, SR)
    assert p.median.item() == pytest.approx(250, rel=0.03)
    assert 80 < p.range.item() < 95  # 95th - 5th percentile of a linear 200..300 sweep is 90


def test_silence_and_noise_have_no_pitch():
    p = vm.pitch(torch.stack([SILENCE, _noise(), _sine(220)]), SR)
    assert p.median[:2].isnan().all() and p.range[:2].isnan().all()
    assert p.voiced_fraction[:2].tolist() == [0.0, 0.0]
    assert p.median[2].item() == pytest.approx(220, rel=0.03)
    assert vm.pitch(torch.zeros(50), SR).median.isnan().all()  # shorter than one frame


def test_centroid_rises_with_frequency():
    c = vm.spectral_centroid(torch.stack([_sine(220), _sine(440), _sine(1000)]), SR)
    assert c[0] < c[1] < c[2]
    assert c[1].item() == pytest.approx(440, rel=0.05)


def test_noise_is_flatter_than_a_sine():
    f = vm.spectral_flatness(torch.stack([_sine(440), _noise()]), SR)
    assert f[0] < 0.01 and 0.4 < f[1] <= 1.0  # white noise: about exp(-0.577) = 0.56


def test_double_amplitude_is_six_db_louder():
    quiet = torch.stack([_sine(440, 0.25), _noise(0.1)])
    assert torch.allclose(vm.loudness(2 * quiet, SR) - vm.loudness(quiet, SR), torch.tensor(6.02), atol=0.5)
    short = quiet[:, :1000]  # shorter than a 400 ms gating block: ungated level
    assert torch.allclose(vm.loudness(2 * short, SR) - vm.loudness(short, SR), torch.tensor(6.02), atol=0.5)


def test_silence_is_nan_for_spectra_and_floor_for_loudness():
    x = torch.stack([SILENCE, _sine(440)])
    assert vm.spectral_centroid(x, SR)[0].isnan() and vm.spectral_flatness(x, SR)[0].isnan()
    assert vm.loudness(x, SR)[0].item() == vm.LOUDNESS_FLOOR
    silence = Generation(SILENCE[None], "voice", sample_rate=SR)
    assert vm.voice_loudness(silence, None) == -70.0
    assert math.isnan(vm.voice_pitch_median(silence, None))
    # the batch mean ignores silent rows
    assert vm.voice_centroid(Generation(x, "voice", sample_rate=SR), None) == \
        pytest.approx(vm.spectral_centroid(x[1], SR).item())


def test_wrappers_read_the_sample_rate_from_the_record():
    x = torch.stack([_sine(110), _sine(330)])
    speech = Generation(x, "voice", sample_rate=SR)
    assert vm.voice_pitch_median(speech, None) == pytest.approx(220, rel=0.03)
    assert vm.voice_pitch_range(speech, None) < 5
    assert vm.voice_flatness(speech, None) < 0.01
    with pytest.raises(vm.MissingSampleRateError, match="sample_rate"):
        vm.voice_centroid(Generation(x, "voice"), None)
    with pytest.raises(ValueError, match="positive whole number"):
        vm.voice_centroid(Generation(x, "voice", sample_rate=0), None)


def test_speaking_rate_needs_durations_in_the_record():
    with pytest.raises(polysteer.PolysteerError, match="durations"):
        vm.voice_speaking_rate(Generation(torch.zeros(1, 100), "voice", sample_rate=SR), None)


@pytest.mark.parametrize(("bad", "error", "match"), [
    (torch.zeros(2, 1, 100), ValueError, "mix channels down"),
    (torch.zeros(2, 0), ValueError, "empty"),
    (torch.zeros(100, dtype=torch.int64), TypeError, "int16"),
])
def test_bad_waveforms_are_clear_errors(bad, error, match):
    with pytest.raises(error, match=match):
        vm.as_waveforms(bad)


def test_input_conversions():
    pcm = (_sine(220) * 32767).to(torch.int16)
    assert vm.as_waveforms(pcm).shape == (1, T.numel())
    assert vm.pitch(pcm, SR).median.item() == pytest.approx(220, rel=0.03)
    assert vm.pitch(_sine(220).double().numpy(), SR).median.item() == pytest.approx(220, rel=0.03)
    with pytest.raises(ValueError, match="n_fft"):
        vm.spectral_centroid(torch.zeros(100), SR)


def test_registered_under_the_voice_plugin():
    manager = polysteer.create_plugin_manager(load_entry_points=False)
    names = {"voice_pitch_median", "voice_pitch_range", "voice_centroid", "voice_loudness", "voice_flatness",
             "voice_speaking_rate"}
    registered = {e.name for e in manager.measures.by_plugin("voice")}
    assert names <= registered and registered - names <= {"voice_wer"}  # voice_wer: the Whisper judge
    for name in names:
        assert [r.module for r in manager.measures.entry(name).requires] == ["torchaudio"]
    info = next(i for i in manager.plugins() if i.name == "voice")
    assert set(info.registered["measures"]) == registered


NO_TORCHAUDIO = """
import sys
sys.modules["torchaudio"] = None  # as if not installed: importing it fails, find_spec says no
import polysteer
manager = polysteer.create_plugin_manager(load_entry_points=False)
info = next(i for i in manager.plugins() if i.name == "voice")
assert not info.ready and info.fix == "pip install 'polysteer[voice]'", info.fix
assert "voice_loudness" in manager.measures
try:
    manager.measures.get("voice_loudness")
except polysteer.MissingDependencyError as err:
    assert "polysteer[voice]" in str(err)
else:
    raise AssertionError("expected MissingDependencyError")
print("ok")
"""


def test_registers_without_torchaudio_and_names_the_fix():
    result = subprocess.run([sys.executable, "-c", NO_TORCHAUDIO], capture_output=True, text=True,
                            env={**os.environ, "POLYSTEER_DISABLE_PLUGIN_AUTOLOAD": "1"}, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
