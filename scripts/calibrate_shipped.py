#!/usr/bin/env python
"""Calibrate shipped styles on the embedded models and ship the results.

    python scripts/calibrate_shipped.py                      # every style with a judge, text model
    python scripts/calibrate_shipped.py pirate formal --model smollm2
    python scripts/calibrate_shipped.py cheerful --model avatars

Each calibration is :func:`polysteer.calibrate` (the same as ``polysteer calibrate STYLE --model M``)
with its plot in ``docs/figures/calibration/STYLE-MODEL.png``. It is shipped, as
``core/shipped/calibrations/STYLE/MODEL@ARCH.json`` where steering finds it, only when some grid
point stayed coherent and the concept rose before the bound (and not with ``--no-ship``); a table
of the chosen ranges goes to ``docs/figures/calibration/MODEL.json``.
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
    parser.add_argument("--no-ship", action="store_true",
                        help="measure and plot only (docs/figures/calibration/), ship nothing")
    parser.add_argument("--table", action="store_true", help="only write the table in docs/calibration.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.table:
        write_table(args.model)
        return 0
    import polysteer as ps

    model = ps.load_model(args.model)
    styles = args.styles or (TEXT_STYLES if model.modality == "text" else CROSSMODAL)
    FIGURES.mkdir(parents=True, exist_ok=True)
    summary_path = FIGURES / f"{args.model}.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in styles:
        cal = ps.calibrate(model, name, grid=args.grid)
        short = cal.model.short()
        # shipped only when some point stayed coherent and the concept rose before the bound:
        # otherwise 1.0 would mean "past the bound" or "a setting that does nothing"
        if cal.coherent and cal.low is not None and not args.no_ship:
            cal.save(SHIPPED / name / f"{short}.json")
        ps.plot_calibration(cal, FIGURES / f"{name}-{args.model}.png")
        summary[name] = {**cal.summary(), "points": [{k: v for k, v in p.items() if k != "texts"}
                                                     for p in cal.points]}
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"{name}: 1.0 = raw {cal.high:g} (low {cal.low}), coherent={cal.coherent}", file=sys.stderr)
    write_table(args.model)
    return 0


def write_table(model: str | None = None) -> None:
    """The table of chosen ranges (every model measured) between the markers of docs/calibration.md."""
    lines = ["| style | model | calibrated 1.0 = raw | concept rose from raw | score unsteered -> at 1.0 | "
             "coherence cost unsteered -> at 1.0 (bound) | shipped | plot |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(FIGURES.glob("*.json")):
        for name, s in json.loads(path.read_text()).items():
            base = s["points"][0]
            top = next(p for p in s["points"] if p["intensity"] == s["high"])
            low = "never" if s["low"] is None else f"{s['low']:g}"
            note = "" if s["coherent"] else " (no point within the bound)"
            lines.append(f"| {name} | {path.stem} | {s['high']:g}{note} | {low} | "
                         f"{base['score']:.2f} -> {top['score']:.2f} | "
                         f"{base['coherence']:.2f} -> {top['coherence']:.2f} ({s['bound']:.2f}) | "
                         f"{'yes' if any((SHIPPED / name).glob(f'{path.stem}@*.json')) else 'no'} | "
                         f"[png](figures/calibration/{name}-{path.stem}.png) |")
    lines.append("")
    lines.append("Scores and coherence costs per modality: text = judge P(concept) and incoherent rows; "
                 "image = classifier P(attributes) and off-target attributes changed; voice = signed "
                 "relative change of the prosody profile and Whisper WER.")
    doc_path = ROOT / "docs" / "calibration.md"
    doc = doc_path.read_text()
    begin, end = "<!-- calibration-table:begin -->", "<!-- calibration-table:end -->"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc_path.write_text(f"{head}{begin}\n" + "\n".join(lines) + f"\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
