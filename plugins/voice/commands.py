"""Voice CLI commands: ``speak`` (synthesise text with a VITS voice, optionally steered and compared) and
``transcribe`` (WAV files to text with Whisper, optionally steered)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from polysteer import Command, load_model, load_style, steer
from polysteer.console import say
from polysteer.errors import MissingDependencyError


def _speak_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voice", default="joe",
                   help="embedded voice (joe), model config name, or a VITS folder")
    p.add_argument("--style", help="style YAML file or shipped style name (e.g. joe-higher-pitch)")
    p.add_argument("--intensity", type=float, default=1.0, help="style intensity (default 1.0)")
    p.add_argument("--compare", action="store_true",
                   help="also write the unsteered speech, print measured differences, draw spectrograms")
    p.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same voice)")
    p.add_argument("--phonemes", action="store_true", help="the text is espeak IPA phonemes")
    p.add_argument("-o", "--output", type=Path, default=Path("speech.wav"), help="WAV file to write")
    p.add_argument("text", help="what to say")


def _load_voice(name: str) -> Any:
    if Path(name).expanduser().is_dir():
        return load_model({"kind": "vits", "name": name})
    return load_model(name if name != "joe" else "vits")


def measure_speech(adapter: Any, generation: Any) -> dict[str, float]:
    """The voice measures of a one-sample generation's waveform (cut to its length) and its
    speaking rate."""
    from polysteer.plugins.voice import measures as m

    rate, wave = generation.sample_rate, generation.rows()[0][None]
    pitch = m.pitch(wave, rate, fmin=60.0, fmax=400.0)
    return {"duration_s": wave.shape[-1] / rate, "pitch_median_hz": pitch.median.item(),
            "pitch_range_hz": pitch.range.item(), "centroid_hz": m.spectral_centroid(wave, rate).item(),
            "loudness_lufs": m.loudness(wave, rate).item(),
            "flatness": m.spectral_flatness(wave, rate).item(),
            "rate_phonemes_per_s": m.generation_speaking_rate(generation).item()}


def compare_table(plain: dict[str, float], steered: dict[str, float], title: str) -> str:
    """A readable table: measure, unsteered, steered, difference."""
    lines = [f"{'measure':<22}{'unsteered':>12}{title[:16]:>18}{'change':>12}"]
    for key, a in plain.items():
        b = steered[key]
        change = b - a if math.isfinite(a) and math.isfinite(b) else float("nan")
        lines.append(f"{key:<22}{a:>12.5g}{b:>18.5g}{change:>+12.4g}")
    return "\n".join(lines)


def spectrogram_png(path: Path, waves: list[tuple[str, Any]], sample_rate: int) -> Path:
    """Log-mel spectrograms of the waveforms, stacked, written atomically to ``path``."""
    import torch
    import torchaudio

    from polysteer.plots import pyplot, save_png

    plt = pyplot()
    if plt is None:
        raise MissingDependencyError("the spectrogram needs matplotlib: pip install 'polysteer[plots]'")
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=80)
    fig, axes = plt.subplots(len(waves), 1, figsize=(9, 2.6 * len(waves)), squeeze=False)
    for ax, (title, wave) in zip(axes[:, 0], waves, strict=True):
        db = 10 * torch.log10(mel(wave.reshape(-1)).clamp_min(1e-10))
        ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=float(db.max()) - 80,
                  extent=(0, wave.shape[-1] / sample_rate, 0, 80))
        ax.set_title(title)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


def _speak_run(args: argparse.Namespace) -> int:
    from polysteer.plugins.voice.adapter import write_wav

    adapter = _load_voice(args.voice)
    style = load_style(args.style) if args.style else None
    inputs = {"phonemes": args.text} if args.phonemes else args.text

    def speak(intensity: float) -> Any:
        return adapter.generate(inputs, style=style, intensity=intensity, seed=args.seed)

    steered_record = speak(args.intensity)
    steered = steered_record.rows()[0][None]
    steered_measures = measure_speech(adapter, steered_record) if args.compare else None
    write_wav(args.output, steered[0], adapter.sample_rate)
    say(f"wrote {args.output} ({steered.shape[-1] / adapter.sample_rate:.2f} s)")
    if not args.compare:
        return 0
    if style is None:
        say("--compare without --style: nothing to compare against; pass --style")
        return 2
    plain_record = speak(0.0)
    plain = plain_record.rows()[0][None]
    plain_path = args.output.with_name(f"{args.output.stem}.unsteered{args.output.suffix or '.wav'}")
    write_wav(plain_path, plain[0], adapter.sample_rate)
    title = f"{style.name} x {args.intensity:g}"
    print(compare_table(measure_speech(adapter, plain_record), steered_measures, title))
    png = spectrogram_png(args.output.with_suffix(".png"), [("unsteered", plain), (title, steered)],
                          adapter.sample_rate)
    say(f"wrote {plain_path} and {png}")
    return 0


def _transcribe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio", nargs="+", type=Path, help="PCM WAV files (any length and sample rate)")
    p.add_argument("--model", default="whisper-tiny-en",
                   help="embedded Whisper model (whisper-tiny-en) or a transformers Whisper folder")
    p.add_argument("--style", help="style YAML file or shipped style name that steers the recogniser")
    p.add_argument("--intensity", type=float, default=1.0, help="style intensity (default 1.0)")
    p.add_argument("--compare", action="store_true", help="also print the unsteered transcript")


def _transcribe_run(args: argparse.Namespace) -> int:
    from polysteer.plugins.voice.whisper_adapter import read_wav

    missing = [str(a) for a in args.audio if not a.is_file()]
    if missing:
        say(f"error: no such audio file: {', '.join(missing)}")
        return 2
    adapter = load_model({"kind": "whisper", "name": args.model})
    style = load_style(args.style) if args.style else None
    if args.compare and style is None:
        say("--compare without --style: nothing to compare against; pass --style")
        return 2
    for path in args.audio:
        wave, rate = read_wav(path)
        prefix = f"{path}: " if len(args.audio) > 1 else ""
        if style is None:
            print(prefix + adapter.transcribe_long(wave, rate, progress=True))
            continue
        with steer(adapter, style, intensity=args.intensity):
            steered = adapter.transcribe_long(wave, rate, progress=True)
        if args.compare:
            print(f"{prefix}unsteered: {adapter.transcribe_long(wave, rate, progress=True)}")
            print(f"{prefix}{style.name} x {args.intensity:g}: {steered}")
        else:
            print(prefix + steered)
    return 0


VOICE_COMMANDS = {
    "speak": Command("synthesise speech with a VITS voice (--style to steer, --compare for both)",
                     _speak_args, _speak_run,
                     description="Say TEXT with the embedded Piper voice (or a VITS folder) and write a "
                                 "WAV. With --style it is steered; --compare also writes the unsteered "
                                 "speech, prints measured differences and draws both spectrograms."),
    "transcribe": Command("transcribe WAV files with Whisper (--style to steer, --compare for both)",
                          _transcribe_args, _transcribe_run,
                          description="Print the transcript of each WAV file, read by the embedded "
                                      "Whisper tiny.en (or a transformers Whisper folder). Audio longer "
                                      "than Whisper's 30 s window is cut at quiet moments into pieces "
                                      "that fit it, and the transcripts joined. With --style the "
                                      "recogniser is steered; --compare also prints it unsteered."),
}
