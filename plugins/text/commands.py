"""Text CLI commands: ``steer`` (``generate`` for text models), ``inspect``, ``concept``,
``dictionary``, ``labels``, ``demo-text``, ``classify`` and ``search``; and the text models' part of
``polysteer generate`` (:class:`TextGeneration`: ``--max-new-tokens``, ``--sample``, streaming).
``polysteer models`` is core's (:mod:`polysteer.cli.catalogue`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from polysteer import Command
from polysteer.cli import (
    CommandError,
    GenerateExtension,
    add_generate_arguments,
    load_model_arg,
    run_generate,
    side_by_side,
)
from polysteer.io import configs_dir
from polysteer.plugins.text.classify_cli import CLASSIFY
from polysteer.plugins.text.gguf_cli import EXPORT, IMPORT
from polysteer.plugins.text.search_cli import SEARCH

__all__ = ["TEXT_COMMANDS", "TextGeneration", "load_text_model", "side_by_side"]


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2",
                        help="model config name (smollm2), adapter kind, or local model folder")


def load_text_model(name: str) -> Any:
    """The text model a command names: a shipped model config / adapter kind, or a local folder
    (or ``.gguf`` file) of a transformers causal LM."""
    return load_model_arg(name, modality="text")


# -- generate: the text part ----------------------------------------------------------------------
class TextGeneration(GenerateExtension):
    """Text models in ``polysteer generate``: INPUTs are prompts (chat templates applied when the
    tokenizer has one), ``--max-new-tokens`` and ``--sample`` set decoding, and a single prompt
    streams to the terminal as it is generated."""

    title = "transformers causal LMs (SmolLM2, local folders, .gguf files)"
    modality = "text"

    def recognises(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix == ".gguf"
        config = path / "config.json"
        if not config.is_file():
            return False
        try:
            architectures = json.loads(config.read_text()).get("architectures") or []
        except (json.JSONDecodeError, AttributeError):
            return False
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--max-new-tokens", type=int, default=64,
                            help="tokens generated per prompt (default 64)")
        parser.add_argument("--sample", action="store_true",
                            help="sample (temperature 0.7, seeded by --seed) instead of greedy decoding")

    def inputs(self, adapter: Any, args: argparse.Namespace) -> Any:
        return list(args.inputs) if getattr(args, "inputs", None) else None

    def check(self, args: argparse.Namespace) -> None:
        if args.max_new_tokens < 1:
            raise CommandError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}",
                               "Pass e.g. --max-new-tokens 64")

    def options(self, adapter: Any, args: argparse.Namespace) -> dict[str, Any]:
        options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
        if args.sample:
            options.update(do_sample=True, temperature=0.7)
        return options

    def can_stream(self, adapter: Any, inputs: Any, args: argparse.Namespace) -> bool:
        return isinstance(inputs, str) or (isinstance(inputs, list) and len(inputs) == 1)

    def generate(self, adapter: Any, inputs: Any, *, style: Any, intensity: float, seed: int,
                 options: dict[str, Any], stream: bool = False) -> Any:
        if stream:
            from transformers import TextStreamer

            options = {**options, "streamer": TextStreamer(adapter.tokenizer, skip_prompt=True,
                                                           skip_special_tokens=True)}
        return super().generate(adapter, inputs, style=style, intensity=intensity, seed=seed,
                                options=options)


TEXT_GENERATION = TextGeneration()


# -- steer: generate for text models ------------------------------------------------------------
def _steer_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    add_generate_arguments(p, model=False, inputs=False, grid=False, style_required=True)
    TEXT_GENERATION.add_arguments(p)
    p.add_argument("prompt", help="the user message")


def _steer_run(args: argparse.Namespace) -> int:
    args.inputs, args.grid, args.output = [args.prompt], None, None
    run_generate(args, modality="text")
    return 0


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
    from polysteer.io import home
    from polysteer.plugins.text.concepts import ConceptSpec, build_concept

    spec_path = Path(args.spec)
    if not spec_path.exists():
        spec_path = configs_dir() / "concepts" / f"{args.spec}.yaml"
    if not spec_path.is_file():
        shipped = sorted(p.stem for p in (configs_dir() / "concepts").glob("*.yaml"))
        raise CommandError(f"no concept spec {args.spec!r} (not a file, not a shipped concept)",
                           f"Pass a spec YAML file or a shipped concept: {', '.join(shipped)}")
    spec = ConceptSpec.load(spec_path)
    adapter = load_text_model(args.model)
    dictionary = build_concept(adapter, spec, progress=True)
    default = home() / "dictionaries" / f"{Path(args.model).name}-{spec.name}"
    out = Path(args.output) if args.output else default
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
    p.epilog = ("Several processes: torchrun --nproc-per-node N -m polysteer dictionary "
                "harvest|train CONFIG (see docs/scaling.md).")


def _dictionary_run(args: argparse.Namespace) -> int:
    import torch

    from polysteer.models import resolve_device
    from polysteer.plugins.text.dictionary import (
        harvest_from_config,
        load_config,
        summary,
        train_sites_from_config,
    )
    from polysteer.workflows import init_distributed, shutdown_distributed

    cfg = load_config(args.config, args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "device", None):  # --device: the model (through load_model) and the SAE
        cfg.train.device = args.device
    info = init_distributed(resolve_device(cfg.train.device))  # under torchrun: join the group
    try:
        adapter = load_text_model(cfg.model)
        if args.action == "harvest":
            store = harvest_from_config(cfg, adapter)
            if info.is_main:
                counts = ", ".join(f"{store.n_tokens(s)} tokens of {s}" for s in store.sites)
                print(f"{counts} in {store.folder}")
            return 0
        for site, sae, metrics, folder in train_sites_from_config(cfg, adapter):
            if folder is not None:
                print(f"== {site}" if len(cfg.all_sites()) > 1 else "", end="\n" if len(
                    cfg.all_sites()) > 1 else "")
                print("\n".join(summary(metrics)))
                print(f"{sae.describe()}\nsaved to {folder}")
        return 0
    finally:
        shutdown_distributed()


def _demo_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--prompt", default=None, help="the prompt answered in every style")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--output-dir", default=None, help="also write demo.txt there")


def _demo_run(args: argparse.Namespace) -> int:
    from polysteer.cli import model_node
    from polysteer.plugins.text.demo import DEMO_PROMPT, run_text_demo

    node: Any = model_node(args.model, modality="text")  # a local folder works as well as a name
    run_text_demo(node, args.prompt or DEMO_PROMPT, args.max_new_tokens, args.output_dir)
    return 0


# -- labels -------------------------------------------------------------------------------------
def _labels_args(p: argparse.ArgumentParser) -> None:
    from polysteer.plugins.text.labels import VERIFY_INTENSITY, VERIFY_THRESHOLD

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="label a dictionary's features from a corpus")
    _model_arg(build)
    build.add_argument("--dictionary", required=True, help="dictionary folder or name")
    build.add_argument("--dataset", required=True,
                       help="registered dataset name(s) or local .txt/.jsonl/.csv file(s), "
                            "comma-separated (e.g. sms-spam,bbc-news)")
    build.add_argument("--limit", type=int, default=2000,
                       help="texts read per dataset, a stratified sample when it has more (default 2000)")
    build.add_argument("--top-k", type=int, default=10, help="top contexts kept per feature")
    build.add_argument("--batch-size", type=int, default=8)
    build.add_argument("--verify", type=int, default=64, metavar="N",
                       help="verify the labels of the N densest features by effect (0: none, "
                            "-1: all; default 64)")
    build.add_argument("--intensity", type=float, default=VERIFY_INTENSITY,
                       help="steering intensity for verification")
    build.add_argument("--threshold", type=float, default=VERIFY_THRESHOLD,
                       help="minimum log-prob gain (nats) for a label to hold")
    show = sub.add_parser("show", help="print the labels table, or one feature in detail")
    show.add_argument("dictionary", help="dictionary folder or name")
    show.add_argument("--feature", help="feature index or label to show in detail")
    show.add_argument("--limit", type=int, default=None, help="rows shown")
    show.add_argument("--flagged", action="store_true", help="only labels that did not hold")
    edit = sub.add_parser("set", help="set a user label (never replaced by automatic labelling)")
    edit.add_argument("dictionary", help="dictionary folder or name")
    edit.add_argument("feature", help="feature index or current label")
    edit.add_argument("label", help="the new label")


def _labels_run(args: argparse.Namespace) -> int:
    from polysteer.features import label_table, labels_path, load_labels, set_label
    from polysteer.plugins.text.labels import dictionary_folder, feature_card

    if args.action == "set":
        report = set_label(dictionary_folder(args.dictionary), args.feature, args.label)
        print(f"feature {report.feature}: {report.label} [user]")
        return 0
    if args.action == "show":
        folder = dictionary_folder(args.dictionary)
        if not labels_path(folder).exists():
            return _labels_without_evidence(folder, args)
        reports = load_labels(folder)
        if args.feature is not None:
            feature = args.feature
            matches = [r for r in reports if str(r.feature) == feature or r.label == feature]
            if not matches:
                print(f"no feature {feature!r} in {folder}")
                return 1
            print(feature_card(matches[0]))
            return 0
        shown = [r for r in reports if r.flagged] if args.flagged else reports
        print(label_table(shown, args.limit))
        return 0
    return _labels_build(args)


def _labels_without_evidence(folder: Path, args: argparse.Namespace) -> int:
    """``labels show`` for a dictionary whose labels live in its own file but that has no
    ``labels.json`` (no densities, contexts or verification): its labels, said as such."""
    from polysteer.features import resolve_dictionary

    d = resolve_dictionary(folder.resolve())
    named = [(i, label) for i, label in enumerate(d.labels) if label != f"feature {i}"]
    if not named:
        print(f"{folder} has no labels yet: run `polysteer labels build`")
        return 1
    if args.feature is not None:
        matches = [(i, label) for i, label in named if str(i) == args.feature or label == args.feature]
        if not matches:
            print(f"no feature {args.feature!r} in {folder}")
            return 1
        i, label = matches[0]
        print(f"feature {i}: {label} [from the dictionary file; no label evidence: `polysteer labels "
              "build` adds densities, contexts and verification]")
        return 0
    print(f"{len(named)} of {d.d_features} features of {folder} are labelled (in its dictionary file; "
          "no label evidence: `polysteer labels build` adds densities, contexts and verification)")
    print(f"{'feature':>7}  label")
    for i, label in named[:args.limit]:
        print(f"{i:>7}  {label}")
    return 0


def _labels_build(args: argparse.Namespace) -> int:
    from polysteer.features import (
        apply_labels,
        keep_user_labels,
        label_table,
        labels_path,
        resolve_dictionary,
    )
    from polysteer.plugins.text.labels import (
        auto_label,
        collect_text_reports,
        corpus_texts,
        dictionary_folder,
        verify_labels,
    )

    folder = dictionary_folder(args.dictionary)
    adapter = load_text_model(args.model)
    texts = corpus_texts(args.dataset.split(","), args.limit)
    d = resolve_dictionary(folder.resolve())
    reports = collect_text_reports(adapter, d, texts, top_k=args.top_k, batch_size=args.batch_size,
                                   progress=True)
    keep_user_labels(reports, folder)
    auto_label(reports)
    if args.verify:
        order = sorted(range(len(reports)), key=lambda i: -reports[i].density)
        chosen = order if args.verify < 0 else order[:args.verify]
        verify_labels(adapter, d, reports, intensity=args.intensity, threshold=args.threshold,
                      features=chosen, progress=True)
    apply_labels(d, reports, folder)
    print(label_table(reports, 40))
    flagged = sum(r.flagged for r in reports)
    print(f"\nlabelled {len(reports)} features of {d.describe()}; {flagged} label(s) did not hold; "
          f"saved to {labels_path(folder)}")
    return 0


TEXT_COMMANDS = {
    "labels": Command("label dictionary features (top contexts, promoted tokens), verify labels by "
                      "steering, show and edit them", _labels_args, _labels_run),
    "demo-text": Command("the text demo: SmolLM2 answering one prompt in several shipped styles",
                    _demo_args, _demo_run),
    "steer": Command("generate text under a style (streams; --compare shows unsteered too)",
                     _steer_args, _steer_run),
    "inspect": Command("show which features fire on each token of a text", _inspect_args,
                       _inspect_run),
    "concept": Command("build concept dictionaries from examples", _concept_args, _concept_run),
    "dictionary": Command("harvest activations and train a sparse autoencoder from a config",
                          _dictionary_args, _dictionary_run),
    "classify": CLASSIFY,
    "search": SEARCH,
    "export": EXPORT,
    "import": IMPORT,
}

