#!/usr/bin/env python
"""Calibrate shipped styles on the embedded models and ship the results.

    python scripts/calibrate_shipped.py                      # every style with a judge, text model
    python scripts/calibrate_shipped.py pirate formal --model smollm2
    python scripts/calibrate_shipped.py cheerful --model avatars

Each calibration is :func:`polysteer.calibrate` (the same as ``polysteer calibrate STYLE --model M``)
written to ``core/shipped/calibrations/STYLE/MODEL@ARCH.json`` (where steering finds shipped
calibrations) with its plot in ``docs/figures/calibration/STYLE-MODEL.png``; a table of the chosen
ranges goes to ``docs/figures/calibration/MODEL.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "core" / "shipped" / "calibrations"
FIGURES = ROOT / "docs" / "figures" / "calibration"
TEXT_STYLES = ("positive", "cheerful", "gloomy", "calm", "cool", "businesslike", "formal", "french",
               "pirate", "concise", "cautious", "golden-gate")
"""The twelve text concepts of the evaluation (configs/judges/)."""
CROSSMODAL = ("cheerful", "gloomy", "calm", "cool", "businesslike")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("styles", nargs="*")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--grid", type=float, nargs="+")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import polysteer as ps

    model = ps.load_model(args.model)
    styles = args.styles or (TEXT_STYLES if model.modality == "text" else CROSSMODAL)
    FIGURES.mkdir(parents=True, exist_ok=True)
    summary_path = FIGURES / f"{args.model}.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in styles:
        cal = ps.calibrate(model, name, grid=args.grid)
        short = cal.model.short()
        cal.save(SHIPPED / name / f"{short}.json")
        ps.plot_calibration(cal, FIGURES / f"{name}-{args.model}.png")
        summary[name] = {**cal.summary(), "points": [{k: v for k, v in p.items() if k != "texts"}
                                                     for p in cal.points]}
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"{name}: 1.0 = raw {cal.high:g} (low {cal.low}), coherent={cal.coherent}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
