"""``polysteer classify fit|predict`` (:data:`CLASSIFY`): classifiers from dictionary features, on the
command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from polysteer.cli import Command, load_model_arg
from polysteer.errors import PolysteerError


def _classify_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = sub.add_parser(
        "fit", help="fit on labelled texts; report held-out metrics against two baselines",
        description="Fit a sparse L1 logistic classifier on pooled dictionary features, choose its "
                    "penalty by cross-validation, and report accuracy / F1 / ROC AUC / texts per "
                    "second on a held-out split next to two baselines (TF-IDF and raw activations). "
                    "Writes a run folder with the classifier, report.json, report.md and roc.png.",
        epilog="example: polysteer classify fit --data sms-spam --limit 1500 --save my-spam")
    _common(fit)
    fit.add_argument("--dictionary", default="smollm2-res-sae",
                     help="dictionary name or folder (default smollm2-res-sae); 'none' reads raw "
                          "activations at --site")
    fit.add_argument("--site", help="site to read when --dictionary none (e.g. blocks.12.resid_post)")
    fit.add_argument("--data", required=True,
                     help="registered dataset (sms-spam, rotten-tomatoes...) or a local CSV/TSV/JSONL file")
    fit.add_argument("--text-column", default="text", help="text column of a local file (default text)")
    fit.add_argument("--label-column", default="label", help="label column of a local file (default label)")
    fit.add_argument("--positive", help="the positive label (default: the rarer of two labels)")
    fit.add_argument("--negative", help="comma-separated negative labels (default: all others)")
    fit.add_argument("--limit", type=int, help="use a stratified sample of this many texts")
    fit.add_argument("--test-fraction", type=float, default=1 / 3,
                     help="held-out share (default 1/3)")
    fit.add_argument("--pools", default="max,mean", help="pooling over tokens: max, mean or max,mean")
    fit.add_argument("--features", help="comma-separated hand-chosen feature ids or labels (L2 fit on "
                                         "just these instead of the L1 search over all)")
    fit.add_argument("--digit-share", type=float, default=0.5, metavar="SHARE",
                     help="leave out features with more than this share of their activation on digit "
                          "tokens, and also train on each text with its numbers stripped, so numbers "
                          "alone cannot decide the class (default 0.5; 0 keeps every feature and no "
                          "copies)")
    fit.add_argument("--train-extra", action="append", default=[], metavar="SOURCE[:N]",
                     help="more labelled texts for fitting only (never held out or scored): a "
                          "registered dataset or local file, optionally ':N' for a stratified sample "
                          "of N (seed --seed); repeatable. Example: other kinds of spam than the "
                          "main data holds")
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the split and folds")
    fit.add_argument("--name", help="classifier name (default: DATA)")
    fit.add_argument("--out", default="runs/classify", help="parent folder of the run folder")
    fit.add_argument("--save", metavar="NAME",
                     help="also save the classifier as ~/.cache/polysteer/classifiers/NAME, so styles "
                          "can use it as a rule trigger by name")
    predict = sub.add_parser(
        "predict", help="classify texts and show the features behind each decision",
        epilog="example: polysteer classify predict --classifier smollm2-sms-spam "
               "\"WINNER! Claim your prize now\"")
    _common(predict)
    predict.add_argument("--classifier", required=True, help="classifier name or folder")
    predict.add_argument("--data", help="dataset name or local file to classify (instead of TEXTS)")
    predict.add_argument("--text-column", default="text", help="text column of a local file")
    predict.add_argument("--top", type=int, default=3, help="features shown per text (default 3)")
    predict.add_argument("--json", action="store_true", help="print one JSON object per text")
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2",
                   help="model config name (smollm2), adapter kind, or local model folder")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _classify_run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return _fit(args) if args.action == "fit" else _predict(args)


def _load_adapter(name: str) -> Any:
    return load_model_arg(name, modality="text")


def _split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _features(text: str | None) -> list[int | str] | None:
    items = _split_list(text)
    return None if items is None else [int(t) if t.isdigit() else t for t in items]


def train_extra(source: str, seed: int = 0, text_column: str = "text", label_column: str = "label"
                ) -> Any:
    """The texts ``--train-extra SOURCE[:N]`` adds to fitting: dataset or file ``SOURCE``, a stratified
    sample of ``N`` (``Dataset.sample(N, seed)``) when given."""
    from polysteer.data import load_dataset

    name, _, count = source.rpartition(":")
    if not (name and count.isdigit()):
        name, count = source, ""
    data = load_dataset(name, text_column=text_column, label_column=label_column)
    if count:
        if int(count) < 1:
            raise PolysteerError(f"--train-extra {source}: N must be at least 1")
        data = data.sample(int(count), seed=seed)
    if any(lab is None for lab in data.labels):
        raise PolysteerError(f"--train-extra {source}: every text needs a label (column "
                             f"{label_column!r}); give a labelled file")
    return data


def _fit(args: argparse.Namespace) -> int:
    from polysteer.data import load_dataset
    from polysteer.io import atomic_path, home, write_json
    from polysteer.plugins.text.classify import compare, plot_roc
    from polysteer.workflows import check_run_name, in_run_folder

    name = args.name or Path(str(args.data)).stem
    check_run_name(name)  # everything is checked before the model reads a text
    if not 0 <= args.digit_share <= 1:
        raise PolysteerError(f"--digit-share must be between 0 and 1, got {args.digit_share}")
    data = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column)
    if args.limit is not None:
        if not 0 < args.limit < len(data):
            raise PolysteerError(f"--limit must be between 1 and {len(data) - 1} (the data has "
                                 f"{len(data)} texts), got {args.limit}")
        data = data.sample(args.limit, seed=args.seed)
    train, test = data.split(test_fraction=args.test_fraction, seed=args.seed)
    train_texts, train_labels = list(train.texts), list(train.labels)
    extras = []
    for source in args.train_extra:
        extra = train_extra(source, args.seed, args.text_column, args.label_column)
        train_texts += extra.texts
        train_labels += extra.labels
        extras.append({"source": source, "texts": len(extra)})
    adapter = _load_adapter(args.model)
    dictionary = None if args.dictionary.lower() == "none" else args.dictionary
    digits = args.digit_share > 0
    result = compare(adapter, dictionary, (train_texts, train_labels), (test.texts, test.labels),
                     positive=args.positive, negative=_split_list(args.negative), site=args.site,
                     pools=_split_list(args.pools) or [], features=_features(args.features),
                     folds=args.folds, seed=args.seed, name=name, batch_size=args.batch_size,
                     progress=True, digit_copies=digits,
                     exclude_digit_features=args.digit_share if digits and dictionary else None)
    result.classifier.info["data"] = {"source": str(args.data), "limit": args.limit,
                                      "test_fraction": args.test_fraction, "seed": args.seed,
                                      "digit_share": args.digit_share}
    if extras:
        result.classifier.info["data"]["train_extra"] = extras
    table = result.table()

    def write(folder: Path) -> Any:
        result.classifier.save(folder / "classifier")
        report = {"data": result.classifier.info["data"], "split": result.split,
                  "metrics": result.metrics, "classifier": result.classifier.describe()}
        write_json(folder / "report.json", report)
        with atomic_path(folder / "report.md") as tmp:
            tmp.write_text(f"# {result.classifier.describe()}\n\n```\n{table}\n```\n")
        return plot_roc(result, folder / "roc.png")

    # written into a temporary folder and published when complete: a failed fit leaves no folder
    folder, plot = in_run_folder(args.out, name, write)
    print(result.classifier.describe())
    print(f"held-out: {result.split['test']} texts ({result.split['test_positive']} "
          f"{result.split['positive']}), trained on {result.split['train']}\n")
    print(table)
    print(f"\nrun folder: {folder}" + ("" if plot else " (no ROC plot: pip install matplotlib)"))
    if args.save:
        saved = result.classifier.save(home() / "classifiers" / args.save)
        print(f"saved as {args.save!r} ({saved}); use it in a style: "
              f"when: {{classifier: {args.save}, above: 0.9}}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from polysteer.data import load_dataset
    from polysteer.features import resolve_classifier
    from polysteer.plugins.text.classify import predict_texts

    texts = list(args.texts)
    if args.data:
        texts += load_dataset(args.data, text_column=args.text_column).texts
    if not texts:
        raise PolysteerError("nothing to classify: give TEXT arguments or --data FILE")
    classifier = resolve_classifier(args.classifier)
    adapter = _load_adapter(args.model)
    predictions = predict_texts(adapter, classifier, texts, top=args.top, batch_size=args.batch_size,
                                progress=len(texts) > 64)
    for p in predictions:
        if args.json:
            print(json.dumps({"text": p.text, "label": p.label, "probability": round(p.probability, 6),
                              "drivers": [d.__dict__ for d in p.drivers]}))
            continue
        short = p.text if len(p.text) <= 70 else p.text[:67] + "..."
        print(f"{p.label:<8} {p.probability:6.3f}  {short!r}")
        for d in p.drivers:
            fires = f"fires on: {', '.join(d.fires_on)}" if d.fires_on else ""
            print(f"    {d.contribution:+7.3f}  feature {d.feature:>5} ({d.pool:<4}) {fires}  [{d.label}]")
    sys.stdout.flush()
    return 0


CLASSIFY = Command("fit a sparse classifier on dictionary features (with baselines), or predict with one",
                   _classify_args, _classify_run)
