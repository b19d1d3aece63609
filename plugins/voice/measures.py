"""Voice measures: pitch, spectral centroid, loudness and spectral flatness of waveforms.

Waveforms are float tensors ``(B, T)`` or ``(T,)`` (mono) at a sample rate in Hz; an ``int16``
tensor (PCM) is scaled by ``1 / 32768``. Every function returns one value per waveform, ``(B,)``.

Silence has no pitch, centroid or flatness: those return NaN for a waveform without a voiced
(pitch) or non-silent (spectral) frame, never raise. Loudness of silence is the BS.1770 floor,
-70 LUFS. The ``voice_*`` wrappers (the registered measures) average over the batch ignoring NaN,
so they are NaN only when every waveform is silent.

torchaudio is imported inside the functions that use it (loudness and the spectrogram), so this
module imports with torch alone; pitch is pure torch (``torchaudio.functional.
detect_pitch_frequency`` makes octave errors on 440 Hz tones and reports 2.7 kHz for silence).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from polysteer import Generation, PolysteerError

SILENCE_DB = -60.0
"""Frames whose RMS is below this (dBFS) are silent: no pitch, no centroid, no flatness."""

LOUDNESS_FLOOR = -70.0
"""LUFS reported for silence: the absolute gate of ITU-R BS.1770."""


class MissingSampleRateError(PolysteerError, AttributeError):
    """A voice measure was given a generation without a ``sample_rate``."""


class Pitch(NamedTuple):
    """Per-waveform pitch statistics over voiced frames (NaN where no frame is voiced)."""

    median: torch.Tensor  # (B,) Hz
    range: torch.Tensor  # (B,) Hz, 95th minus 5th percentile of F0
    voiced_fraction: torch.Tensor  # (B,) in [0, 1]


def as_waveforms(wave: Any) -> torch.Tensor:
    """``(B, T)`` float32 from ``(B, T)``/``(T,)`` float, or int16 PCM (scaled by 1/32768)."""
    x = torch.as_tensor(wave)
    if x.dtype == torch.int16:
        x = x.float() / 32768.0
    elif not x.is_floating_point():
        raise TypeError(f"waveforms must be float (or int16 PCM), got dtype {x.dtype}")
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"expected a mono waveform (B, T) or (T,), got shape {tuple(x.shape)}; "
                         "mix channels down first, e.g. wave.mean(dim=-2)")
    if x.shape[-1] == 0:
        raise ValueError("the waveform is empty (T = 0)")
    return x.float()


def _check_rate(sample_rate: Any) -> int:
    try:
        rate = float(sample_rate)
    except (TypeError, ValueError):
        rate = float("nan")
    if isinstance(sample_rate, bool) or not (math.isfinite(rate) and rate > 0 and rate == int(rate)):
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(rate)


def _db(mean_square: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(mean_square.clamp_min(1e-20))


def f0_frames(wave: Any, sample_rate: int, *, fmin: float = 50.0, fmax: float = 1000.0,
              hop_s: float = 0.01, threshold: float = 0.15,
              silence_db: float = SILENCE_DB) -> torch.Tensor:
    """F0 in Hz per frame, ``(B, frames)``, NaN for unvoiced or silent frames (YIN, in torch).

    YIN (de Cheveigne and Kawahara, 2002): the cumulative mean normalised difference of each frame
    with itself shifted by ``tau``; the first dip below ``threshold`` within ``[fmin, fmax]``,
    refined to its local minimum and by parabolic interpolation, is the period. A frame is one
    period of ``fmin`` plus the longest lag; one frame every ``hop_s`` seconds.
    """
    x, sr = as_waveforms(wave), _check_rate(sample_rate)
    if not 0 < fmin < fmax < sr / 2:
        raise ValueError(f"need 0 < fmin < fmax < sample_rate / 2, got fmin={fmin}, fmax={fmax}")
    tau_min, tau_max = max(2, int(sr / fmax)), int(math.ceil(sr / fmin))
    w, n = tau_max, 2 * tau_max + 2  # integration window; frame covers lags up to tau_max + 1
    if x.shape[-1] < n:
        return x.new_full((x.shape[0], 0), float("nan"))
    frames = x.unfold(-1, n, max(1, round(hop_s * sr)))  # (B, F, n)
    n_fft = 1 << (n + w - 1).bit_length()
    spec_a = torch.fft.rfft(frames[..., :w], n_fft)
    corr = torch.fft.irfft(spec_a.conj() * torch.fft.rfft(frames, n_fft), n_fft)[..., :tau_max + 2]
    cs = torch.nn.functional.pad(frames.square().cumsum(-1), (1, 0))
    taus = torch.arange(tau_max + 2, device=x.device)
    energy0 = cs[..., w:w + 1] - cs[..., :1]  # (B, F, 1)
    diff = (energy0 + cs[..., taus + w] - cs[..., taus] - 2 * corr).clamp_min(0)
    cmnd = torch.ones_like(diff)
    cmnd[..., 1:] = diff[..., 1:] * taus[1:] / diff[..., 1:].cumsum(-1).clamp_min(1e-12)

    seg, nxt = cmnd[..., tau_min:tau_max + 1], cmnd[..., tau_min + 1:tau_max + 2]
    below = seg < threshold
    first = below.int().argmax(-1, keepdim=True)  # first lag under the threshold
    idx = torch.arange(seg.shape[-1], device=x.device)
    at_min = (nxt >= seg) & (idx >= first)  # then walk down to the local minimum
    best = torch.where(at_min.any(-1), at_min.int().argmax(-1), seg.shape[-1] - 1) + tau_min
    y0, y1, y2 = (cmnd.gather(-1, (best + k).unsqueeze(-1)).squeeze(-1) for k in (-1, 0, 1))
    denom = y0 - 2 * y1 + y2
    shift = torch.where(denom.abs() > 1e-12, 0.5 * (y0 - y2) / denom, torch.zeros_like(denom))
    f0 = sr / (best + shift.clamp(-1, 1))
    voiced = below.any(-1) & (_db(energy0.squeeze(-1) / w) >= silence_db)
    return torch.where(voiced, f0, torch.full_like(f0, float("nan")))


def pitch(wave: Any, sample_rate: int, **options: Any) -> Pitch:
    """Median and range (95th - 5th percentile) of F0 in Hz over voiced frames, per waveform.

    NaN (median and range) for a waveform with no voiced frame: silence, noise, or shorter than
    two periods of ``fmin``. ``options`` go to :func:`f0_frames`.
    """
    f0 = f0_frames(wave, sample_rate, **options)
    if f0.shape[-1] == 0:
        nan = f0.new_full(f0.shape[:1], float("nan"))
        return Pitch(nan, nan.clone(), torch.zeros_like(nan))
    q = torch.nanquantile(f0, torch.tensor([0.05, 0.5, 0.95], device=f0.device), dim=-1)
    return Pitch(q[1], q[2] - q[0], (~f0.isnan()).float().mean(-1))


def _power_frames(wave: Any, sample_rate: int, n_fft: int,
                  hop_length: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Power spectra ``(B, frames, bins)``, bin frequencies (Hz) and a silent-frame mask."""
    import torchaudio.functional as AF

    x, sr = as_waveforms(wave), _check_rate(sample_rate)
    if x.shape[-1] < n_fft:
        raise ValueError(f"the waveform has {x.shape[-1]} samples, fewer than n_fft={n_fft}; "
                         "pass a smaller n_fft")
    window = torch.hann_window(n_fft, device=x.device)
    power = AF.spectrogram(x, pad=0, window=window, n_fft=n_fft, hop_length=hop_length or n_fft // 4,
                           win_length=n_fft, power=2.0, normalized=False).transpose(-1, -2)
    # Parseval: the full (two-sided) spectrum's energy over n_fft * sum(w^2) is the frame's
    # window-weighted mean square
    full = 2 * power.sum(-1) - power[..., 0] - power[..., -1]
    silent = _db(full / (n_fft * window.square().sum())) < SILENCE_DB
    freqs = torch.linspace(0, sr / 2, power.shape[-1], device=x.device)
    return power, freqs, silent


def _mean_over_frames(values: torch.Tensor, silent: torch.Tensor) -> torch.Tensor:
    return torch.where(silent, torch.full_like(values, float("nan")), values).nanmean(-1)


def spectral_centroid(wave: Any, sample_rate: int, *, n_fft: int = 1024,
                      hop_length: int | None = None) -> torch.Tensor:
    """Spectral centroid in Hz ("bright/crisp"): magnitude-weighted mean frequency, mean over
    non-silent frames; NaN for a silent waveform. Hann window of ``n_fft``, hop ``n_fft // 4``."""
    power, freqs, silent = _power_frames(wave, sample_rate, n_fft, hop_length)
    mag = power.sqrt()
    centroid = (mag * freqs).sum(-1) / mag.sum(-1).clamp_min(1e-20)
    return _mean_over_frames(centroid, silent)


def spectral_flatness(wave: Any, sample_rate: int, *, n_fft: int = 1024,
                      hop_length: int | None = None) -> torch.Tensor:
    """Spectral flatness in [0, 1] ("noisy/breathy"): geometric over arithmetic mean of the power
    spectrum, mean over non-silent frames; about 0.56 for white noise, near 0 for a pure tone,
    NaN for a silent waveform."""
    power, _, silent = _power_frames(wave, sample_rate, n_fft, hop_length)
    eps = 1e-12
    flatness = (power + eps).log().mean(-1).exp() / (power.mean(-1) + eps)
    return _mean_over_frames(flatness, silent)


def loudness(wave: Any, sample_rate: int) -> torch.Tensor:
    """Integrated loudness in LUFS (ITU-R BS.1770-4 via ``torchaudio.functional.loudness``).

    Each waveform is one mono channel (weight 1, no dual-mono +3 dB). Waveforms shorter than one
    400 ms gating block get the ungated K-weighted level instead. Silence, and anything quieter,
    reads :data:`LOUDNESS_FLOOR` (-70 LUFS), never NaN or -inf.
    """
    import torchaudio.functional as AF

    x, sr = as_waveforms(wave), _check_rate(sample_rate)
    if x.shape[-1] >= round(0.4 * sr):
        lufs = AF.loudness(x.unsqueeze(-2), sr)
    else:
        k = AF.highpass_biquad(AF.treble_biquad(x, sr, 4.0, 1500.0, 1 / math.sqrt(2)), sr, 38.0, 0.5)
        lufs = -0.691 + _db(k.square().mean(-1))
    return torch.nan_to_num(lufs, nan=LOUDNESS_FLOOR).clamp_min(LOUDNESS_FLOOR)


# -- registered measures: (generation, baseline) -> float -------------------------------------
def generation_sample_rate(generation: Any) -> int:
    """The record's ``sample_rate`` in Hz; a clear error naming the fix if it has none."""
    rate = getattr(generation, "sample_rate", None)
    if rate is None:
        raise MissingSampleRateError(
            f"voice measures need the sample rate of the outputs, and this "
            f"{getattr(generation, 'modality', type(generation).__name__)} generation has no "
            "`sample_rate`; an audio adapter's run_generation sets it on the record "
            "(`Generation(..., sample_rate=22050)`)")
    return _check_rate(rate)


def _batch_mean(values: torch.Tensor) -> float:
    return values.nanmean().item()


def voice_pitch_median(generation: Generation, baseline: Generation | None = None) -> float:
    """Median F0 in Hz over voiced frames (mean over the batch; NaN if all silent)."""
    return _batch_mean(pitch(generation.outputs, generation_sample_rate(generation)).median)


def voice_pitch_range(generation: Generation, baseline: Generation | None = None) -> float:
    """F0 range in Hz (95th - 5th percentile over voiced frames; mean over the batch)."""
    return _batch_mean(pitch(generation.outputs, generation_sample_rate(generation)).range)


def voice_centroid(generation: Generation, baseline: Generation | None = None) -> float:
    """Spectral centroid in Hz, higher is brighter/crisper (mean over frames and the batch)."""
    return _batch_mean(spectral_centroid(generation.outputs, generation_sample_rate(generation)))


def voice_loudness(generation: Generation, baseline: Generation | None = None) -> float:
    """Integrated loudness in LUFS (BS.1770; -70 for silence; mean over the batch)."""
    return _batch_mean(loudness(generation.outputs, generation_sample_rate(generation)))


def voice_flatness(generation: Generation, baseline: Generation | None = None) -> float:
    """Spectral flatness in [0, 1], higher is noisier/breathier (mean over frames and the batch)."""
    return _batch_mean(spectral_flatness(generation.outputs, generation_sample_rate(generation)))


# -- speaking rate: from the durations a TTS model predicted, not from the audio ---------------
def speaking_rate(durations: torch.Tensor, frame_seconds: float,
                  counted: torch.Tensor | None = None) -> torch.Tensor:
    """Phonemes per second, per row: counted phonemes over the time all symbols take.

    ``durations`` ``(B, P)`` are frames per input symbol (0 on padding), ``frame_seconds`` the
    length of one frame (hop / sample rate), ``counted`` ``(B, P)`` marks the symbols that are
    phonemes (default: every symbol with a non-zero duration). NaN for a row with no time.
    """
    d = torch.as_tensor(durations).float()
    if d.dim() == 1:
        d = d.unsqueeze(0)
    keep = (d > 0) if counted is None else torch.as_tensor(counted).bool()
    seconds = d.sum(-1) * float(frame_seconds)
    phonemes = keep.float().sum(-1)
    nan = torch.full_like(seconds, float("nan"))
    return torch.where(seconds > 0, phonemes / seconds.clamp_min(1e-12), nan)


def spectral_centroid_frames(wave: Any, sample_rate: int, *, n_fft: int = 1024,
                             hop_length: int | None = None) -> torch.Tensor:
    """Spectral centroid in Hz per frame, ``(B, frames)``, NaN on silent frames (frame ``k`` is
    centred on sample ``k * hop_length``; hop ``n_fft // 4`` by default)."""
    power, freqs, silent = _power_frames(wave, sample_rate, n_fft, hop_length)
    mag = power.sqrt()
    centroid = (mag * freqs).sum(-1) / mag.sum(-1).clamp_min(1e-20)
    return torch.where(silent, torch.full_like(centroid, float("nan")), centroid)


def generation_speaking_rate(generation: Generation) -> torch.Tensor:
    """Phonemes per second of each row of a TTS generation, from the durations its model
    predicted (``generation.durations``; one frame is ``extras["hop_length"] / sample_rate``
    seconds; only the symbols ``extras["phonemes"]`` marks are counted, when it is given)."""
    hop = generation.extras.get("hop_length")
    if generation.durations is None or hop is None:
        raise PolysteerError(
            f"speaking rate needs the durations a TTS model predicted, and this {generation.modality} "
            "generation has none: its adapter sets Generation.durations and extras['hop_length'] "
            "(the VITS adapter does)")
    frame_seconds = int(hop) / generation_sample_rate(generation)
    return speaking_rate(generation.durations, frame_seconds, generation.extras.get("phonemes"))


def voice_speaking_rate(generation: Generation, baseline: Generation | None = None) -> float:
    """Phonemes per second from the predicted durations in the record (mean over the batch).

    Needs a record with durations (the VITS adapter's); the audio alone does not say where
    phonemes are.
    """
    return _batch_mean(generation_speaking_rate(generation))


VOICE_MEASURES = {
    "voice_pitch_median": voice_pitch_median,
    "voice_pitch_range": voice_pitch_range,
    "voice_centroid": voice_centroid,
    "voice_loudness": voice_loudness,
    "voice_flatness": voice_flatness,
    "voice_speaking_rate": voice_speaking_rate,
}
"""The measures the voice plugin registers, by name."""
