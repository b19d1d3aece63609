"""Voice CLI: ``speak`` (``generate`` for VITS voices), ``transcribe`` (WAV files of any length to
text with Whisper), and the voice models' part of ``polysteer generate``: :class:`SpeechGeneration`
(text or ``--phonemes`` in, WAVs out; ``--compare`` prints measured differences and draws
spectrograms) and :class:`TranscriptionGeneration` (WAV files in, transcripts out)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from polysteer import Command, load_style, steer
from polysteer.cli import (
    CommandError,
    GenerateExtension,
    Run,
    add_generate_arguments,
    load_model_arg,
    output_stem,
    run_generate,
)
from polysteer.errors import MissingDependencyError


def _model_type(path: Path) -> str | None:
    """``model_type`` of a transformers folder's ``config.json`` (``None`` if there is none)."""
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        return None


def measure_speech(generation: Any, row: int = 0) -> dict[str, float]:
    """The voice measures of one row of a TTS generation record (its waveform cut to its length)
    and its speaking rate (from the durations the model predicted)."""
    from polysteer.plugins.voice import measures as m

    rate, wave = generation.sample_rate, generation.rows()[row][None]
    pitch = m.pitch(wave, rate, fmin=60.0, fmax=400.0)
    return {"duration_s": wave.shape[-1] / rate, "pitch_median_hz": pitch.median.item(),
            "pitch_range_hz": pitch.range.item(), "centroid_hz": m.spectral_centroid(wave, rate).item(),
            "loudness_lufs": m.loudness(wave, rate).item(),
            "flatness": m.spectral_flatness(wave, rate).item(),
            "rate_phonemes_per_s": float(m.generation_speaking_rate(generation)[row])}


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

    from polysteer.io import pyplot, save_png

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


class SpeechGeneration(GenerateExtension):
    """VITS voices in ``polysteer generate``: INPUTs are texts to say (``--phonemes``: espeak IPA);
    each run is written as WAV (``OUT.wav``, the unsteered one ``OUT.unsteered.wav``). With
    ``--compare`` the measured differences (pitch, centroid, loudness, flatness, speaking rate)
    are printed and both spectrograms drawn into ``OUT.png``."""

    title = "VITS voices (the embedded Piper voice joe, VITS/MMS folders)"
    modality = "voice"
    default_output = "speech.wav"

    def recognises(self, path: Path) -> bool:
        return _model_type(path) == "vits"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--phonemes", action="store_true", help="the text is espeak IPA phonemes")

    def inputs(self, adapter: Any, args: argparse.Namespace) -> Any:
        texts = list(getattr(args, "inputs", None) or [])
        if not texts:
            return None
        return {"phonemes": texts} if args.phonemes else texts

    def generate(self, adapter: Any, inputs: Any, *, style: Any, intensity: float, seed: int,
                 options: dict[str, Any], stream: bool = False) -> Any:
        steer = {} if style is None else {"style": style, "intensity": intensity}
        try:
            result = adapter.generate(inputs, seed=seed, **steer, **options)
        except ValueError as err:  # e.g. an input without phonemes
            raise CommandError(f"cannot say {inputs!r}: {err}", "Pass words to say (or IPA with "
                               "--phonemes)") from err
        return result

    def write(self, adapter: Any, runs: list[Run], output: Path, args: argparse.Namespace
              ) -> list[Path]:
        paths = super().write(adapter, runs, output, args)
        if len(runs) == 2 and runs[0].intensity is None:
            waves = [(run.title, adapter.waveforms(run.result)[0].unsqueeze(0)) for run in runs]
            paths.append(spectrogram_png(output_stem(output, runs, runs[-1]).with_suffix(".png"),
                                         waves, adapter.sample_rate))
        return paths

    def show(self, adapter: Any, runs: list[Run], args: argparse.Namespace) -> None:
        if len(runs) != 2 or runs[0].intensity is not None:
            super().show(adapter, runs, args)
            return
        plain, steered = ([measure_speech(run.result, row) for row in range(len(run.result))]
                          for run in runs)
        for i, (a, b) in enumerate(zip(plain, steered, strict=True)):
            if i:
                print()
            print(compare_table(a, b, runs[1].title))


class TranscriptionGeneration(GenerateExtension):
    """Whisper models in ``polysteer generate``: INPUTs are WAV files (up to Whisper's 30 s
    window; ``polysteer transcribe`` takes any length), outputs are transcripts."""

    title = "Whisper speech recognisers (whisper-tiny-en, transformers Whisper folders)"
    modality = "asr"

    def recognises(self, path: Path) -> bool:
        return _model_type(path) == "whisper"

    def check(self, args: argparse.Namespace) -> None:
        paths = [Path(p) for p in getattr(args, "inputs", None) or []]
        if not paths:
            raise CommandError("a Whisper model needs audio", "Pass WAV files as INPUTs")
        _check_audio(paths)

    def inputs(self, adapter: Any, args: argparse.Namespace) -> Any:
        return [Path(p) for p in args.inputs]


def _check_audio(paths: list[Path]) -> None:
    missing = [str(a) for a in paths if not a.is_file()]
    if missing:
        raise CommandError(f"no such audio file: {', '.join(missing)}", "Pass existing PCM WAV files")


SPEECH_GENERATION = SpeechGeneration()
TRANSCRIPTION_GENERATION = TranscriptionGeneration()


def _speak_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voice", default="joe",
                   help="embedded voice (joe), model config name, or a VITS folder")
    add_generate_arguments(p, model=False, inputs=False, grid=False)
    SPEECH_GENERATION.add_arguments(p)
    p.add_argument("-o", "--output", type=Path, default=Path("speech.wav"), help="WAV file to write")
    p.add_argument("text", help="what to say")


def _speak_run(args: argparse.Namespace) -> int:
    args.model, args.inputs, args.grid = args.voice, [args.text], None
    run_generate(args, modality="voice")
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

    _check_audio(list(args.audio))
    style = load_style(args.style) if args.style else None
    if args.compare and style is None:
        raise CommandError("--compare needs --style", "Pass --style NAME (a shipped style or a style "
                           "YAML file)")
    adapter = load_model_arg(args.model, modality="asr")
    if not hasattr(adapter, "transcribe_long"):  # another recogniser: no long-audio reading
        raise CommandError(f"model {args.model!r} cannot transcribe audio of any length",
                           "Pass a Whisper model (whisper-tiny-en or a transformers Whisper folder)")
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
