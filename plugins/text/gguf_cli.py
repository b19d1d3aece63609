"""``polysteer export gguf`` and ``polysteer import gguf``: llama.cpp control vectors (see
:mod:`polysteer.plugins.text.gguf`)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from polysteer.cli import Command, CommandError, load_model_arg
from polysteer.io import say
from polysteer.plugins.text.gguf import GGUFExportWarning, export_gguf, import_gguf

__all__ = ["EXPORT", "IMPORT", "load_text_model"]

FORMATS = ("gguf",)


def load_text_model(name: str) -> Any:
    """The text model ``--model`` names (shipped name, local folder or ``.gguf`` model file)."""
    return load_model_arg(name, modality="text")


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=FORMATS, help="gguf: a llama.cpp control vector")
    p.add_argument("style", help="style YAML file or shipped style name")
    p.add_argument("--model", default="smollm2",
                   help="the model the style's dictionaries belong to (name or local folder)")
    p.add_argument("-o", "--output", required=True, help="the .gguf file to write")
    p.add_argument("--intensity", type=float, default=1.0,
                   help="bake this intensity in (default 1.0: llama.cpp scale 1.0 = intensity 1.0)")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="leave out (with a warning) components llama.cpp cannot express instead "
                        "of refusing the style")


def _export_run(args: argparse.Namespace) -> int:
    adapter = load_text_model(args.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GGUFExportWarning)
        vector = export_gguf(args.style, adapter, args.output, intensity=args.intensity,
                             skip_unsupported=args.skip_unsupported)
    for w in caught:
        say(f"warning: {w.message}")
    layers = sorted(vector.directions)
    say(f"wrote {args.output}: {len(layers)} layer(s) {layers}, model hint {vector.model_hint!r}")
    say("apply it with llama.cpp (the model as GGUF; scale 1.0 = polysteer intensity 1.0):")
    print(f"llama-cli -m model.gguf --control-vector-scaled {args.output} 1.0 "
          f"--control-vector-layer-range {layers[0]} {layers[-1]}")
    return 0


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=FORMATS, help="gguf: a llama.cpp control vector (e.g. repeng's)")
    p.add_argument("file", help="the control-vector .gguf file")
    p.add_argument("--model", default="smollm2", help="the model it is for (name or local folder)")
    p.add_argument("-o", "--output", required=True,
                   help="folder to write the direction sets and style.yaml into")
    p.add_argument("--name", default=None, help="style name (default: the file's name)")


def _import_run(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise CommandError(f"{args.file}: no such file", "Pass the path of a control-vector .gguf")
    adapter = load_text_model(args.model)
    style = import_gguf(args.file, adapter, args.output, name=args.name)
    say(f"wrote {Path(args.output) / 'style.yaml'}: style {style.name!r}, "
        f"{len(style.components)} layer(s); steer with it at intensity 1.0 = llama.cpp scale 1.0")
    return 0


EXPORT = Command("export a style to another tool's format (gguf: llama.cpp control vector)",
                 _export_args, _export_run)
IMPORT = Command("import another tool's steering file (gguf: llama.cpp / repeng control vector) "
                 "as direction sets + a style", _import_args, _import_run)
