"""The ``polysteer`` command line: one convention for every command.

Every subcommand is a :class:`Command` object (help, arguments, run) registered through
``polysteer_register_commands`` and defined in a CLI module (``polysteer.cli.commands`` for core,
``polysteer.plugins.<modality>.commands`` for the built-in plugins). A command reports a user's
mistake by raising a :class:`~polysteer.errors.PolysteerError`; :func:`main` prints it as one line
``error: <problem>. <fix>`` and exits with code 2. argparse's own usage errors stay argparse's.

``polysteer generate`` works on every registered model; what a model kind adds to it (options,
turning INPUTs into inputs, streaming, how a comparison is written and shown) is a
:class:`GenerateExtension` registered through ``polysteer_register_generate_extensions`` under the
adapter kind. Commands load models with :func:`load_model_arg`, which accepts a shipped model name,
a registered kind or a local model folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polysteer.errors import PolysteerError, did_you_mean
from polysteer.plugin.manager import PluginManager, current_plugin_manager


@dataclass(frozen=True)
class Command:
    """A CLI subcommand: ``add_arguments(parser)`` declares options, ``run(args)`` does the work
    and returns an exit code (``None`` means 0). A user's mistake is raised as a
    :class:`~polysteer.errors.PolysteerError` (exit code 2, one line)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str = ""


class CommandError(PolysteerError, ValueError):
    """A command-line value that cannot work: ``CommandError(problem, fix)`` reads
    ``"<problem>. <fix>"`` (the one line ``polysteer`` prints after ``error:``)."""

    def __init__(self, problem: str, fix: str = ""):
        problem = problem.rstrip(". ")
        super().__init__(f"{problem}. {fix}" if fix else problem)
        self.problem, self.fix = problem, fix


# -- loading models named on the command line ---------------------------------------------------
def _looks_like_path(name: str) -> bool:
    return any(sep in name for sep in ("/", "\\")) or name.startswith((".", "~"))


def model_node(name: str, *, modality: str | None = None, plugins: PluginManager | None = None
               ) -> dict[str, Any]:
    """The config node (``{"kind": ..., ...}``) of the model a command names: a shipped model name
    (``smollm2``, ``avatars``, ``joe``...), a registered adapter kind, or a local model path (a
    folder, or a file such as ``.gguf``) that a registered :class:`GenerateExtension` recognises.
    ``modality`` restricts local paths to extensions of that modality. Unknown names and
    unrecognised paths are a :class:`CommandError` that says what may be passed."""
    from polysteer.models.loading import named_config, shipped_model_names

    plugins = plugins or current_plugin_manager()
    model_names = shipped_model_names()
    if name in plugins.adapters or name in model_names:  # these win over same-named folders (./NAME)
        return named_config(name, plugins)
    path = Path(name).expanduser()
    if path.exists():
        for entry in plugins.generate_extensions:
            extension = entry.value
            if entry.name in plugins.adapters and (modality is None or extension.modality in (
                    None, modality)) and extension.recognises(path):
                return {"kind": entry.name, "name": str(path)}
        want = f"a {modality} model" if modality else "a model"
        raise CommandError(f"{name} is not {want} polysteer can load (no plugin recognises it)",
                           "Pass a model folder (transformers config.json, diffusers "
                           "model_index.json, a VITS voice...) or a shipped model name: "
                           f"{', '.join(model_names)}")
    what = "no model folder or file" if _looks_like_path(name) else "unknown model"
    hint = did_you_mean(name, sorted({*model_names, *plugins.adapters.names()})).strip()
    raise CommandError(f"{what} {name!r}",
                       f"{hint + ' ' if hint else ''}Pass a shipped model ({', '.join(model_names)}), "
                       f"a registered kind ({', '.join(plugins.adapters.names())}) or a local model "
                       "folder")


def load_model_arg(name: str, *, modality: str | None = None, plugins: PluginManager | None = None
                   ) -> Any:
    """Load the model a command names (see :func:`model_node`). ``modality``: the command works
    on models of this modality only; another one is a :class:`CommandError`."""
    from polysteer.models.loading import load_model

    adapter = load_model(model_node(name, modality=modality, plugins=plugins), plugins=plugins)
    check_modality(adapter, name, modality)
    return adapter


def check_modality(adapter: Any, name: str, modality: str | None) -> None:
    """A :class:`CommandError` when a command that needs ``modality`` got another kind of model."""
    if modality is not None and adapter.modality != modality:
        raise CommandError(f"model {name!r} is a {adapter.modality} model and this command needs a "
                           f"{modality} model", f"Pass a {modality} model with --model")


# -- generate extensions ------------------------------------------------------------------------
@dataclass
class Run:
    """One column of ``polysteer generate``: its title, intensity (``None``: unsteered, no style at
    all) and what ``adapter.generate`` (or the extension's :meth:`GenerateExtension.generate`)
    returned."""

    title: str
    intensity: float | None
    result: Any
    streamed: bool = False


class GenerateExtension:
    """What one model kind adds to ``polysteer generate`` and its aliases (``steer``, ``draw``,
    ``speak``). Register an instance under the adapter kind with
    ``polysteer_register_generate_extensions``; a kind without one gets this default behaviour:
    INPUTs parsed as JSON where they parse (else kept as strings), one per sample, through
    ``adapter.prepare_inputs``; outputs written with ``adapter.save_outputs`` and shown with
    ``adapter.describe_outputs``.

    Override only what the kind needs. ``args`` is the parsed command line (the extension's own
    options included); core never looks at a modality.
    """

    title: str = ""
    """Heading of this extension's options in ``polysteer generate --help``."""
    modality: str | None = None
    """The modality of the models this extension loads from a folder (for commands that need one)."""
    default_output: str | None = None
    """Where outputs go without ``-o`` (``None``: only shown, not written)."""

    def recognises(self, path: Path) -> bool:
        """Whether the local path ``path`` holds a model of this kind (loaded as
        ``{"kind": KIND, "name": str(path)}``)."""
        return False

    def add_arguments(self, parser: argparse.ArgumentParser | Any) -> None:
        """Declare this kind's extra options (on ``generate``'s parser and the aliases)."""

    def check(self, args: argparse.Namespace) -> None:
        """Raise :class:`CommandError` for option values that cannot work, before the model is
        loaded (a mistake should not cost a model load)."""

    def inputs(self, adapter: Any, args: argparse.Namespace) -> Any:
        """The spec handed to ``adapter.prepare_inputs``: ``None`` without INPUTs (the adapter's
        default inputs), else one value per INPUT (JSON where it parses)."""
        values = list(getattr(args, "inputs", None) or [])
        if not values:
            return None
        parsed = []
        for value in values:
            try:
                parsed.append(json.loads(value))
            except json.JSONDecodeError:
                parsed.append(value)
        return parsed

    def options(self, adapter: Any, args: argparse.Namespace) -> dict[str, Any]:
        """Keyword arguments for ``adapter.generate`` (e.g. ``num_inference_steps``)."""
        return {}

    def can_stream(self, adapter: Any, inputs: Any, args: argparse.Namespace) -> bool:
        """Whether a single generation of ``inputs`` is shown while it is generated."""
        return False

    def generate(self, adapter: Any, inputs: Any, *, style: Any, intensity: float, seed: int,
                 options: dict[str, Any], stream: bool = False) -> Any:
        """One generation; ``style`` is ``None`` for the unsteered run. The default seeds torch's
        global generator (sampling) and calls ``adapter.generate``."""
        import torch

        torch.manual_seed(seed)
        if style is None:
            return adapter.generate(inputs, **options)
        return adapter.generate(inputs, style=style, intensity=intensity, **options)

    def describe(self, adapter: Any, result: Any) -> list[str]:
        """One line per sample of a result (``adapter.describe_outputs``)."""
        return [str(line) for line in adapter.describe_outputs(result)]

    def write(self, adapter: Any, runs: list[Run], output: Path, args: argparse.Namespace
              ) -> list[Path]:
        """Write every run; the default is ``adapter.save_outputs(result, stem)`` per run, the
        steered (last) run at ``output``'s stem and the others beside it
        (``OUT.unsteered``, ``OUT.i0.5``)."""
        paths: list[Path] = []
        for run in runs:
            paths += adapter.save_outputs(run.result, output_stem(output, runs, run))
        return paths

    def show(self, adapter: Any, runs: list[Run], args: argparse.Namespace) -> None:
        """Print the runs: one alone as is, two side by side, a grid one block per intensity."""
        described = [self.describe(adapter, run.result) for run in runs]
        if len(runs) == 1:
            if not runs[0].streamed:
                print("\n\n".join(described[0]))
            return
        if len(runs) == 2:
            for i, (left, right) in enumerate(zip(*described, strict=True)):
                if i:
                    print()
                print(side_by_side((runs[0].title, left), (runs[1].title, right)))
            return
        for run, lines in zip(runs, described, strict=True):
            print(f"== {run.title}")
            print("\n".join(lines))


def output_stem(output: Path, runs: list[Run], run: Run) -> Path:
    """Where ``run``'s files go: ``output`` without its suffix for the last (steered) run,
    ``OUT.unsteered`` for an unsteered comparison, ``OUT.i<intensity>`` in a grid."""
    stem = output.with_suffix("") if output.suffix else output
    if run is runs[-1] and len(runs) <= 2:
        return stem
    tag = "unsteered" if run.intensity is None else f"i{run.intensity:g}"
    return stem.with_name(f"{stem.name}.{tag}")


def extension_for(kind: str, plugins: PluginManager | None = None) -> GenerateExtension:
    """The extension registered for the adapter ``kind``, else the default
    :class:`GenerateExtension`."""
    plugins = plugins or current_plugin_manager()
    if kind in plugins.generate_extensions:
        return plugins.generate_extensions.get(kind)
    return GenerateExtension()


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``header`` in left-aligned columns."""
    table = [tuple(header), *map(tuple, rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def side_by_side(left: tuple[str, str], right: tuple[str, str], width: int | None = None) -> str:
    """Two titled texts in two columns fitted to the terminal."""
    width = width or shutil.get_terminal_size((100, 20)).columns
    col = max(20, (width - 3) // 2)
    a = [left[0], "-" * len(left[0]), *textwrap.wrap(left[1], col)]
    b = [right[0], "-" * len(right[0]), *textwrap.wrap(right[1], col)]
    a += [""] * (len(b) - len(a))
    b += [""] * (len(a) - len(b))
    return "\n".join(f"{x:<{col}} | {y}" for x, y in zip(a, b, strict=True))


# -- the program --------------------------------------------------------------------------------
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
        add_device_arguments(p)
        p.set_defaults(_command=entry.name)
    return parser


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` (every command has them; a command that declared its own keeps
    its own). They apply to every model the command loads without its own device/dtype."""
    from polysteer.models.device import DEVICES, DTYPE_CHOICES

    taken = parser._option_string_actions  # noqa: SLF001 (argparse has no public lookup)
    if "--device" not in taken:
        parser.add_argument("--device", default=None, metavar="|".join(DEVICES),
                            help="where models run: auto (a GPU when there is one), cpu, cuda[:N], "
                                 "mps (default: the model config's, cpu for the shipped models)")
    if "--dtype" not in taken:
        parser.add_argument("--dtype", default=None, metavar="|".join(DTYPE_CHOICES),
                            help="model precision: float32, bfloat16, float16, or auto (bfloat16 "
                                 "on GPUs that have it, float32 on the CPU)")


def error_line(err: BaseException) -> str:
    """``error: <message>`` on one line (a message's own line breaks become spaces)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"error: {text or type(err).__name__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``polysteer`` script: run a command, return its exit code (2 and one
    ``error:`` line for a polysteer error or a missing file)."""
    try:
        plugins = current_plugin_manager()
        parser = build_parser(plugins)
        args = parser.parse_args(list(argv) if argv is not None else None)
        if not getattr(args, "_command", None):
            parser.print_help()
            return 0
        from polysteer.models.device import model_defaults, resolve_device, resolve_dtype

        device, dtype = getattr(args, "device", None), getattr(args, "dtype", None)
        if device is not None:
            resolve_device(device)  # a device this machine lacks fails before any model loads
        if dtype is not None:
            resolve_dtype(dtype, device)
        with model_defaults(device, dtype):
            return int(plugins.commands.get(args._command).run(args) or 0)
    except (PolysteerError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
