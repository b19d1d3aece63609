#!/usr/bin/env python
"""Rebuild the embedded voice's labelled decoder-input SAE (the shipped ``joe-decoder-sae``) with
:func:`polysteer.plugins.voice.sae.build_decoder_sae`.

    python scripts/build_voice_sae.py                 # into the shipped folder (about 5 minutes)
    python scripts/build_voice_sae.py --out my-dicts  # somewhere else

Nothing here is needed at run time; it only makes the shipped dictionary reproducible.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path


def _voice_args():
    """``voice_args`` of the sibling script ``build_voice_dictionaries.py`` (scripts are not a package)."""
    path = Path(__file__).resolve().with_name("build_voice_dictionaries.py")
    spec = importlib.util.spec_from_file_location("build_voice_dictionaries", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.voice_args


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild the decoder-input SAE into ``--out``; 0 on success."""
    from polysteer.plugins.voice.sae import build_decoder_sae

    args, adapter = _voice_args()(__doc__.splitlines()[0], argv)
    sae = build_decoder_sae(adapter)
    sae.save(args.out / f"{Path(args.voice).name}-decoder-sae")
    metrics = sae.info.details["metrics"]
    print(sae.describe(), {k: metrics[k] for k in ("fve", "l0", "dead_fraction") if k in metrics})
    for label, evidence in sae.info.details["labels"].items():
        print(f"  {label}: {evidence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
