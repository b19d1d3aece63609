"""``polysteer prefs show|undo|reset|history USER``: the remembered preferences of one user.

The same operations as :class:`polysteer.preferences.PreferenceStore` (``show``, ``undo``,
``reset``, ``history``), on the default store (``<polysteer home>/preferences.sqlite``) or
``--store PATH``.
"""

from __future__ import annotations

import argparse
import json
import time

from polysteer.cli.main import Command, print_table
from polysteer.preferences import DEFAULT_DECAY, Preference, PreferenceStore

ACTIONS = ("show", "undo", "reset", "history")


def _prefs_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="show the active preferences, undo the last "
                        "change, reset (forget them; undo brings them back) or list the history")
    parser.add_argument("user", metavar="USER", help="the user id (the `user` field of a request)")
    parser.add_argument("--store", metavar="PATH", help="the SQLite store (default: "
                        "<polysteer home>/preferences.sqlite)")
    parser.add_argument("--decay", type=int, default=DEFAULT_DECAY, metavar="TURNS",
                        help=f"turns over which a preference fades (0: never; default {DEFAULT_DECAY})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _print_preferences(user: str, prefs: list[Preference], as_json: bool) -> None:
    if as_json:
        print(json.dumps([p.to_json() for p in prefs], indent=2))
    elif not prefs:
        print(f"{user}: no active preferences")
    else:
        print_table(("preference", "weight", "strength", "stated at turn", "age", "statement"),
                    [(p.name, f"{p.weight:.2f}", f"{p.strength:.2f}", str(p.stated_turn), str(p.age),
                      p.statement[:60]) for p in prefs])


def _prefs_run(args: argparse.Namespace) -> int:
    store = PreferenceStore(args.store, decay=args.decay)
    if args.action == "show":
        _print_preferences(args.user, store.show(args.user), args.json)
    elif args.action == "undo":
        prefs = store.undo(args.user)
        if not args.json:
            print(f"undone; {args.user} now has:")
        _print_preferences(args.user, prefs, args.json)
    elif args.action == "reset":
        store.reset(args.user)
        print(json.dumps({"reset": args.user}) if args.json
              else f"{args.user}: preferences reset (`polysteer prefs undo {args.user}` brings them back)")
    else:
        versions = store.history(args.user)
        if args.json:
            print(json.dumps([v.to_json() for v in versions], indent=2))
        elif not versions:
            print(f"{args.user}: no history")
        else:
            print_table(("version", "turn", "when", "action", "preferences", "detail"),
                        [(str(v.version) + (" (undone)" if v.undone else ""), str(v.turn),
                          time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.created)), v.action,
                          ", ".join(v.preferences) or "-", v.detail[:60]) for v in versions])
    return 0


PREFS_COMMAND = Command(
    "show, undo, reset or list the history of a user's remembered preferences",
    _prefs_args, _prefs_run,
    description="A user's remembered preferences (stated in conversation, recognised from the "
                "model's features, kept per user in SQLite): show the active ones with their decayed "
                "weights, undo the last change, reset them, or list every version.")
