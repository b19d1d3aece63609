"""The ``polysteer`` command line: command objects, the parser, model arguments, the core commands
and ``polysteer generate``.

The names below are the declared surface plugins import (``from polysteer.cli import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.cli.commands import add_generate_arguments, run_generate
from polysteer.cli.main import (
    Command,
    CommandError,
    GenerateExtension,
    Run,
    load_model_arg,
    main,
    model_node,
    output_stem,
    side_by_side,
)

__all__ = [
    "Command", "CommandError", "GenerateExtension", "Run", "add_generate_arguments",
    "load_model_arg", "main", "model_node", "output_stem", "run_generate", "side_by_side",
]
