"""``polysteer style``: work with styles. ``style from-example FILE... --model M -o style.yaml``
writes a style that makes the model's output more like the examples (see
:func:`polysteer.style_from_example`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from polysteer.cli.main import Command, CommandError, load_model_arg

TEXT_SUFFIXES = (".txt", ".md")


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["from-example"], help="from-example: a style from examples")
    parser.add_argument("files", nargs="+", type=Path,
                        help="examples: text files (one example per non-empty line) for a text "
                             "model, WAV recordings for a voice, PNG images for an image model")
    parser.add_argument("--model", required=True, help="the model to steer (smollm2, joe, avatars...)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the style YAML to write")
    parser.add_argument("--neutral", nargs="*", type=Path, default=None,
                        help="neutral examples of the same kind (default: built-in neutral texts, "
                             "the model's own plain outputs)")
    parser.add_argument("--top", type=int, default=3, help="at most this many features (default 3)")
    parser.add_argument("--min-effect", type=float, default=1.0,
                        help="keep features at least this many neutral standard deviations apart "
                             "(default 1.0)")
    parser.add_argument("--name", default=None, help="the style's name (default: the output's stem)")


def _read(files: list[Path], modality: str) -> list[Any]:
    for f in files:
        if not f.exists():
            raise CommandError(f"{f} does not exist", "give existing example files")
    if modality == "text":
        if any(f.suffix.lower() not in TEXT_SUFFIXES for f in files):
            raise CommandError("a text model reads text examples", "give .txt files, one example "
                               "per line")
        return [line.strip() for f in files for line in f.read_text().splitlines() if line.strip()]
    return [str(f) for f in files]


def _run(args: argparse.Namespace) -> int:
    from polysteer.workflows.from_example import save_style_from_example, style_from_example

    adapter = load_model_arg(args.model)
    examples = _read(args.files, adapter.modality)
    neutral = _read(args.neutral, adapter.modality) if args.neutral else None
    style = style_from_example(adapter, examples, neutral, top=args.top, min_effect=args.min_effect,
                               name=args.name or args.output.stem)
    save_style_from_example(style, args.output)
    for component in style.components:
        print(f"{component.name}: weight {component.weight} ({component.dictionary})")
    print(f"wrote {args.output}")
    return 0


STYLE_COMMANDS = {
    "style": Command("styles: 'style from-example FILE... --model M -o S.yaml' writes a style that "
                     "makes a model's output like the examples", _args, _run),
}
