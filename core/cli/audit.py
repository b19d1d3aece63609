"""``polysteer audit STYLE --model M``: the side-effect audit of a style on neutral probes
(:func:`polysteer.audit`): the dictionary features that moved most, the next-token KL per position
(text) and the off-target measures (image, voice); a table, ``--json``, ``--html``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from polysteer.cli.main import Command, CommandError, load_model_arg


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("style", help="a shipped style name or a style YAML file")
    parser.add_argument("--model", required=True, help="the model (smollm2, avatars, joe, a folder...)")
    parser.add_argument("--intensity", type=float, default=1.0, help="the style's intensity (default 1)")
    parser.add_argument("--dictionary", default="auto",
                        help="the dictionary whose features are watched: a name or folder, 'auto' "
                             "(default: the SAE shipped for the model) or 'none'")
    parser.add_argument("--top", type=int, default=10, help="how many features to list (default 10)")
    parser.add_argument("--probes", type=Path, default=None,
                        help="a text file of probes, one per line (default: the shipped neutral "
                             "probes of the model's modality)")
    parser.add_argument("--measure", action="append", default=[], metavar="NAME",
                        help="also compare this registered measure (e.g. voice_wer); repeatable")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="text: tokens per probe")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--html", type=Path, default=None, help="also write an HTML report with plots")


def _probes(path: Path | None) -> Any:
    if path is None:
        return None
    if not path.is_file():
        raise CommandError(f"{path} does not exist", "give a text file with one probe per line")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise CommandError(f"{path} holds no probes", "write one probe per line")
    return lines


def _run(args: argparse.Namespace) -> int:
    from polysteer.steering.style import load_style
    from polysteer.workflows.audit import audit

    if args.top < 1:
        raise CommandError(f"--top {args.top} lists nothing", "give --top 1 or more")
    try:
        style = load_style(args.style)
    except FileNotFoundError as err:
        raise CommandError(str(err), "give a shipped style name or a style YAML file") from None
    adapter = load_model_arg(args.model)
    generate = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else None
    dictionary = None if args.dictionary == "none" else args.dictionary
    report = audit(adapter, style, args.intensity, probes=_probes(args.probes), dictionary=dictionary,
                   top=args.top, measures=args.measure, generate=generate)
    if args.html is not None:
        report.to_html(args.html)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.table())
        if args.html is not None:
            print(f"wrote {args.html}")
    return 0


AUDIT_COMMAND = Command("side effects of a style on neutral probes: the dictionary features that "
                        "moved most, next-token KL per position (text), off-target measures "
                        "(image, voice); --json, --html", _args, _run)
