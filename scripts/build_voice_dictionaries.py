#!/usr/bin/env python
"""Rebuild the embedded voice's shipped dictionaries (``joe-pitch``, ``joe-brightness``,
``joe-rate``, ``joe-intonation``) with :func:`polysteer.plugins.voice.features.build_voice_dictionaries`.

    python scripts/build_voice_dictionaries.py                 # into the shipped folder (about 4 minutes)
    python scripts/build_voice_dictionaries.py --out my-dicts  # somewhere else

Nothing here is needed at run time; it only makes the shipped dictionaries reproducible.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def voice_args(description: str, argv: Sequence[str] | None) -> tuple[argparse.Namespace, Any]:
    """``(--out/--voice arguments, the loaded voice)`` for the voice rebuild scripts (this one and
    ``build_voice_sae.py``)."""
    import torch

    from polysteer.plugins.voice import SHIPPED
    from polysteer.plugins.voice.adapter import VitsAdapter

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=SHIPPED / "dictionary",
                        help="folder the dictionaries are written to (default: the shipped ones)")
    parser.add_argument("--voice", default="joe", help="embedded voice (default joe) or a VITS folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return args, VitsAdapter.load(args.voice)


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild the voice dictionaries into ``--out``; 0 on success."""
    from polysteer.plugins.voice.features import build_voice_dictionaries

    args, adapter = voice_args(__doc__.splitlines()[0], argv)
    for name, dictionary in build_voice_dictionaries(adapter, prefix=Path(args.voice).name).items():
        dictionary.save(args.out / name)
        print(name, dictionary.describe())
        for label, effect in dictionary.info.details.get("effect", {}).items():
            print(f"  {label}: {effect}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
