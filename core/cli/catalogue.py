"""``polysteer models``: list, install and verify every artifact of every plugin.

Models, voices, ASR models and data sets come from the artifact catalogue
(:mod:`polysteer.data.catalogue`), so an artifact a third-party plugin registers is listed, installed
and verified here like the built-in ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from polysteer.cli.main import Command, print_table
from polysteer.data.catalogue import KINDS, artifact, catalogue, plugin_of, status, verify_folder
from polysteer.data.manifest import MODEL_MANIFEST
from polysteer.errors import PolysteerError


def _models_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="list", choices=("list", "install", "verify"),
                        help="list the catalogue (default), install an artifact, or re-hash it")
    parser.add_argument("name", nargs="?", help="an artifact name (install/verify), e.g. smollm2; "
                        "verify also takes the path of a folder polysteer converted")
    parser.add_argument("--kind", choices=KINDS, help="list only this kind of artifact")
    parser.add_argument("--verify", action="store_true",
                        help="list: re-hash every installed artifact (slow for large models)")
    parser.add_argument("--force", action="store_true", help="install: convert or fetch again")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _state(row: dict[str, Any]) -> str:
    if not row["installed"]:
        return "not installed"
    if row["verified"] is None:
        return "installed"
    return "installed, verified" if row["verified"] else f"DAMAGED: {row['problems'][0]}"


def _print_artifacts(rows: list[dict[str, Any]]) -> None:
    print_table(("name", "kind", "modality", "plugin", "state", "size", "licence", "package"),
                [(r["name"], r["kind"], r["modality"], r["plugin"], _state(r), r["size"],
                  r["licence"].split(" (")[0].split(";")[0], r["package"]) for r in rows])


def _models_run(args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = catalogue(rehash=args.verify, kind=args.kind)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _print_artifacts(rows)
        return 0
    if not args.name:
        names = ", ".join(row["name"] for row in catalogue())
        raise PolysteerError(f"`polysteer models {args.action}` needs a NAME; the catalogue has: {names}")
    if args.action == "verify" and Path(args.name).expanduser().is_dir():
        return _verify_folder(Path(args.name).expanduser(), args.json)
    item = artifact(args.name)  # unknown names: an error with a did-you-mean
    if args.action == "install":
        folder = item.install(force=args.force)
        if args.json:
            print(json.dumps(status(item, plugin_of(args.name)), indent=2))
        else:
            print(folder)
        return 0
    row = status(item, plugin_of(args.name), rehash=True)
    if not row["installed"]:
        row["problems"] = item.verify() or [f"{item.name} is not installed; install it with "
                                            f"`polysteer models install {item.name}`"]
        row["verified"] = False
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        for problem in row["problems"]:
            print(problem, file=sys.stderr)
        print(f"{item.name}: intact" if row["verified"] else
              f"{item.name}: {len(row['problems'])} problem(s)")
    return 0 if row["verified"] else 1


def _verify_folder(folder: Path, as_json: bool) -> int:
    """Verify a local model folder against the manifest polysteer wrote when it converted it."""
    if not (folder / MODEL_MANIFEST).is_file():
        raise PolysteerError(f"{folder} has no {MODEL_MANIFEST}, so there is nothing to verify it against: "
                             "only folders polysteer converted carry one (load any other folder with "
                             "--model PATH)")
    problems = verify_folder(folder, str(folder))
    if as_json:
        print(json.dumps({"folder": str(folder), "verified": not problems, "problems": problems}, indent=2))
    else:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{folder}: intact" if not problems else f"{folder}: {len(problems)} problem(s)")
    return 0 if not problems else 1


MODELS_COMMAND = Command(
    "list, install and verify every embedded artifact: models, voices, ASR models and data sets",
    _models_args, _models_run)
