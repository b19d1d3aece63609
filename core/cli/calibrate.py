"""``polysteer calibrate STYLE --model M``: measure what intensity 1.0 of a style should mean."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polysteer.cli.main import Command, load_model_arg, print_table
from polysteer.steering.style import load_style
from polysteer.workflows.calibrate import calibrate, plot_calibration


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("style", help="a shipped style name or a style YAML file")
    parser.add_argument("--model", required=True, help="a shipped model name, a registered kind or a "
                                                       "local model folder")
    parser.add_argument("--judge", help="judge spec (configs/judges/NAME.yaml or a YAML path); "
                                        "default: the one named like the style or its concept")
    parser.add_argument("--grid", type=float, nargs="+", help="raw intensities to sweep "
                                                              "(default: the judge's grid)")
    parser.add_argument("--all-points", action="store_true",
                        help="sweep the whole grid (default: stop after two points past the bound)")
    parser.add_argument("-o", "--output", help="write the calibration JSON here instead of "
                                               "$POLYSTEER_HOME/calibrations/STYLE/MODEL.json")
    parser.add_argument("--dry-run", action="store_true", help="measure and print, store nothing")
    parser.add_argument("--plot", help="write the score/coherence plot as this PNG")
    parser.add_argument("--json", action="store_true", help="print the calibration as JSON")


def _run(args: argparse.Namespace) -> int:
    adapter = load_model_arg(args.model)
    style = load_style(args.style)
    cal = calibrate(adapter, style, judge=args.judge, grid=args.grid,
                    stop_after=0 if args.all_points else 2)
    path = None
    if not args.dry_run:
        path = cal.save(Path(args.output) if args.output else None)
    if args.plot:
        plot_calibration(cal, args.plot)
    if args.json:
        print(json.dumps(cal.to_json(), indent=2))
        return 0
    print_table(["raw intensity", cal.score, cal.coherence, "coherent"],
                [[f"{p['intensity']:g}", f"{p['score']:.3f}", f"{p['coherence']:.3f}",
                  "-" if p["intensity"] == 0 else ("yes" if p.get("coherent") else "no")]
                 for p in cal.points])
    low = "never rose" if cal.low is None else f"{cal.low:g}"
    print(f"{style.name} on {cal.model.short()}: intensity 1.0 = raw {cal.high:g} "
          f"(concept rose from raw {low}; coherence bound {cal.bound:.3f})"
          + ("" if cal.coherent else "; NO grid point stayed within the bound"))
    if path is not None:
        print(f"written to {path} (steering with {style.name} on this model now uses it)")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


CALIBRATE_COMMAND = Command(
    "sweep a style's intensity on held-out inputs and store where the concept rises and the "
    "output stays coherent (intensity 1.0 = the strongest coherent setting)", _args, _run)
