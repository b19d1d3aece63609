"""The ``polysteer`` command line. Subcommands come from the plugin registry."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from polysteer.errors import PolysteerError
from polysteer.manager import PluginManager, current_plugin_manager


@dataclass(frozen=True)
class Command:
    """A CLI subcommand: ``add_arguments(parser)`` declares options, ``run(args)`` does the work
    and returns an exit code (``None`` means 0)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str = ""


def build_parser(plugins: PluginManager) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="polysteer",
        description="Read and steer what generative models think, in text, images and voice.",
        epilog="Run 'polysteer COMMAND --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in sorted(plugins.commands, key=lambda e: e.name):
        command: Command = entry.value
        p = sub.add_parser(entry.name, help=command.help,
                           description=command.description or command.help)
        command.add_arguments(p)
        p.set_defaults(_command=entry.name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``polysteer`` script."""
    try:
        plugins = current_plugin_manager()
        parser = build_parser(plugins)
        args = parser.parse_args(argv)
        if not getattr(args, "_command", None):
            parser.print_help()
            return 0
        return int(plugins.commands.get(args._command).run(args) or 0)
    except PolysteerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
