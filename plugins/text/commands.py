"""Text CLI commands: ``steer``, ``inspect``, ``concept`` and ``dictionary`` (``polysteer models`` is
core's: :mod:`polysteer.catalogue_cli`)."""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from polysteer import Command, load_model, load_style
from polysteer.paths import configs_dir


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2",
                        help="model config name (smollm2), adapter kind, or local model folder")


def load_text_model(name: str) -> Any:
    """A shipped model config / adapter kind, else a local folder or hub id for transformers."""
    if Path(name).exists():
        return load_model({"kind": "transformers", "name": name})
    return load_model(name)


# -- steer --------------------------------------------------------------------------------------
def _steer_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--style", required=True, help="style YAML file or shipped style name")
    p.add_argument("--intensity", type=float, default=1.0, help="style intensity (default 1.0)")
    p.add_argument("--compare", action="store_true", help="print unsteered and steered side by side")
    p.add_argument("--seed", type=int, default=0, help="random seed (sampling only)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="sample (temperature 0.7) instead of greedy")
    p.add_argument("prompt", help="the user message")


def _steer_run(args: argparse.Namespace) -> int:
    import torch
    from transformers import TextStreamer

    adapter = load_text_model(args.model)
    style = load_style(args.style)
    options = {"max_new_tokens": args.max_new_tokens}
    if args.sample:
        options.update(do_sample=True, temperature=0.7)

    def run(intensity: float, stream: bool) -> str:
        torch.manual_seed(args.seed)
        streamer = TextStreamer(adapter.tokenizer, skip_prompt=True, skip_special_tokens=True) \
            if stream else None
        out = adapter.generate(args.prompt, style=style, intensity=intensity, streamer=streamer,
                               **options)
        return adapter.texts(out)[0]

    if not args.compare:
        run(args.intensity, stream=True)
        return 0
    plain, steered = run(0.0, stream=False), run(args.intensity, stream=False)
    print(side_by_side(("unsteered", plain), (f"{style.name} x {args.intensity:g}", steered)))
    return 0


def side_by_side(left: tuple[str, str], right: tuple[str, str], width: int | None = None) -> str:
    """Two titled texts in two columns fitted to the terminal."""
    width = width or shutil.get_terminal_size((100, 20)).columns
    col = max(20, (width - 3) // 2)
    a = [left[0], "-" * len(left[0]), *textwrap.wrap(left[1], col)]
    b = [right[0], "-" * len(right[0]), *textwrap.wrap(right[1], col)]
    a += [""] * (len(b) - len(a))
    b += [""] * (len(a) - len(b))
    return "\n".join(f"{x:<{col}} | {y}" for x, y in zip(a, b, strict=True))


# -- inspect ------------------------------------------------------------------------------------
def _inspect_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--dictionary", required=True, help="dictionary folder or name")
    p.add_argument("--top", type=int, default=3, help="features shown per token")
    p.add_argument("--html", metavar="PATH", help="also write an HTML page highlighting the tokens per "
                   "feature")
    p.add_argument("--html-features", type=int, default=8, metavar="N",
                   help="features shown in the HTML page (default 8, the strongest in the text)")
    p.add_argument("text", help="the text to read")


def _inspect_run(args: argparse.Namespace) -> int:
    from polysteer.plugins.text.inspect import read_text, top_per_token, write_inspect_html

    adapter = load_text_model(args.model)
    readout = read_text(adapter, args.dictionary, args.text)
    for row in top_per_token(readout, top=args.top):
        feats = "  ".join(f"{label} {value:+.2f}" for label, value in row["features"])
        print(f"{row['token']!r:>16}  {feats}")
    if args.html:
        path = write_inspect_html(readout, args.html, features=args.html_features)
        print(f"wrote {path}", file=sys.stderr)
    return 0


# -- concept ------------------------------------------------------------------------------------
def _concept_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build a concept dictionary from a spec of examples")
    _model_arg(build)
    build.add_argument("spec", help="concept spec YAML (configs/concepts/NAME.yaml or a path)")
    build.add_argument("-o", "--output", help="output folder (default $POLYSTEER_HOME/dictionaries/"
                                              "MODEL-NAME)")


def _concept_run(args: argparse.Namespace) -> int:
    from polysteer.paths import home
    from polysteer.plugins.text.concepts import ConceptSpec, build_concept

    spec_path = Path(args.spec)
    if not spec_path.exists():
        spec_path = configs_dir() / "concepts" / f"{args.spec}.yaml"
    spec = ConceptSpec.load(spec_path)
    adapter = load_text_model(args.model)
    dictionary = build_concept(adapter, spec, progress=True)
    out = Path(args.output) if args.output else home() / "dictionaries" / f"{args.model}-{spec.name}"
    dictionary.save(out)
    print(f"{dictionary.describe()}\nsaved to {out} (recommended intensity {spec.intensity})")
    return 0


# -- dictionary ---------------------------------------------------------------------------------
def _dictionary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["harvest", "train"],
                   help="harvest: store activations only (resumable); train: harvest if needed, "
                        "train the SAE, report metrics and save it")
    p.add_argument("config", help="dictionary config YAML (configs/dictionary/NAME.yaml or a path)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="override config keys, dotted for sections (train.steps=200)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _dictionary_run(args: argparse.Namespace) -> int:
    import torch

    from polysteer.plugins.text.dictionary import harvest_from_config, load_config, summary, train_from_config

    cfg = load_config(args.config, args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = load_text_model(cfg.model)
    if args.action == "harvest":
        store = harvest_from_config(cfg, adapter)
        print(f"{store.n_tokens(cfg.site)} tokens of {cfg.site} in {store.folder}")
        return 0
    sae, metrics, folder = train_from_config(cfg, adapter)
    print("\n".join(summary(metrics)))
    print(f"{sae.describe()}\nsaved to {folder}")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--prompt", default=None, help="the prompt answered in every style")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--output-dir", default=None, help="also write demo.txt there")


def _demo_run(args: argparse.Namespace) -> int:
    from polysteer.plugins.text.demo import DEMO_PROMPT, run_text_demo

    run_text_demo(args.model, args.prompt or DEMO_PROMPT, args.max_new_tokens, args.output_dir)
    return 0


def _labels_args(p: argparse.ArgumentParser) -> None:
    from polysteer.plugins.text import labels

    labels.add_arguments(p)


def _labels_run(args: argparse.Namespace) -> int:
    from polysteer.plugins.text import labels

    return labels.run(args)


TEXT_COMMANDS = {
    "labels": Command("label dictionary features (top contexts, promoted tokens), verify labels by "
                      "steering, show and edit them", _labels_args, _labels_run),
    "demo": Command("the main demo: SmolLM2 answering one prompt in several shipped styles",
                    _demo_args, _demo_run),
    "steer": Command("generate text under a style (streams; --compare shows unsteered too)",
                     _steer_args, _steer_run),
    "inspect": Command("show which features fire on each token of a text", _inspect_args,
                       _inspect_run),
    "concept": Command("build concept dictionaries from examples", _concept_args, _concept_run),
    "dictionary": Command("harvest activations and train a sparse autoencoder from a config",
                          _dictionary_args, _dictionary_run),
}


# -- classify -----------------------------------------------------------------------------------
def _classify_args(p: argparse.ArgumentParser) -> None:
    from polysteer.plugins.text import classify_cli

    classify_cli.add_arguments(p)


def _classify_run(args: argparse.Namespace) -> int:
    from polysteer.plugins.text import classify_cli

    return classify_cli.run(args)


TEXT_COMMANDS["classify"] = Command(
    "fit a sparse classifier on dictionary features (with baselines), or predict with one",
    _classify_args, _classify_run)


# -- search -------------------------------------------------------------------------------------
def _search_args(p: argparse.ArgumentParser) -> None:
    from polysteer.plugins.text import search_cli

    search_cli.add_arguments(p)


def _search_run(args: argparse.Namespace) -> int:
    from polysteer.plugins.text import search_cli

    return search_cli.run(args)


TEXT_COMMANDS["search"] = Command(
    "find dictionary features by label words, by example texts (fire on these, not those), or by "
    "similarity to another feature", _search_args, _search_run)
