"""``polysteer search`` (:data:`SEARCH`): find dictionary features by label, by example texts, or by
similarity."""

from __future__ import annotations

import argparse
from pathlib import Path

from polysteer.cli import Command, load_model_arg
from polysteer.errors import PolysteerError


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dictionary", default="smollm2-res-sae",
                   help="dictionary name or folder (default smollm2-res-sae)")
    p.add_argument("query", nargs="?", help="words to look for in the feature labels")
    p.add_argument("--like", metavar="FEATURE",
                   help="features whose directions point like this one's (index or label)")
    p.add_argument("--positive", action="append", default=[], metavar="TEXT",
                   help="an example the features should fire on (repeat; or a .txt/.csv/.jsonl file)")
    p.add_argument("--negative", action="append", default=[], metavar="TEXT",
                   help="an example they should not fire on (repeat; or a file)")
    p.add_argument("--data", help="a labelled dataset to contrast instead: with --label")
    p.add_argument("--label", help="the label of --data whose texts are the positive examples")
    p.add_argument("--limit", type=int, default=400, help="texts per side read from --data (default 400)")
    p.add_argument("--pool", choices=["max", "mean"], default="max",
                   help="how a text's tokens are pooled for contrasting (default max)")
    p.add_argument("--top", type=int, default=10, help="features shown (default 10)")
    p.add_argument("--model", default="smollm2",
                   help="model that reads the example texts (default smollm2)")
    p.epilog = ('examples: polysteer search "free" | polysteer search --like 2285 | polysteer search '
                '--data sms-spam --label spam | polysteer search --positive "WIN a prize!" --negative '
                '"See you at 6"')


def _search_run(args: argparse.Namespace) -> int:
    from polysteer.features import resolve_dictionary, search_labels, similar_features

    modes = [bool(args.query), bool(args.like), bool(args.positive or args.negative or args.data)]
    if sum(modes) != 1:
        raise PolysteerError("give exactly one of: a QUERY, --like FEATURE, or example texts "
                             "(--positive/--negative, or --data with --label)")
    dictionary = resolve_dictionary(args.dictionary)
    if args.query:
        rows = [(m.index, m.label, f"{m.score:.2f}") for m in search_labels(dictionary, args.query, args.top)]
        header = "match"
    elif args.like:
        like = int(args.like) if args.like.isdigit() else args.like
        rows = [(m.index, m.label, f"{m.score:+.3f}") for m in similar_features(dictionary, like, args.top)]
        header = "cosine"
    else:
        rows, header = _contrast(args, dictionary), "d (pos mean / neg mean)"
    if not rows:
        print("no features found")
        return 1
    print(f"{'feature':>7}  {header:<24} label")
    for index, label, score in rows:
        print(f"{index:>7}  {score:<24} {label}")
    return 0


def _texts(items: list[str]) -> list[str]:
    """Example texts: literal strings, or the texts of files among them."""
    from polysteer.data import load_dataset

    out: list[str] = []
    for item in items:
        path = Path(item)
        out += load_dataset(path).texts if path.suffix and path.is_file() else [item]
    return out


def _contrast(args: argparse.Namespace, dictionary) -> list[tuple[int, str, str]]:
    from polysteer.features import contrast_features
    from polysteer.plugins.text.classify import drop_sinks, text_activations

    if args.data:
        from polysteer.data import load_dataset

        if not args.label:
            raise PolysteerError("--data needs --label: which label's texts are the positive examples")
        data = load_dataset(args.data)
        labels = {str(lab): lab for lab in data.labels if lab is not None}  # as typed -> as stored
        if args.label not in labels:
            raise PolysteerError(f"label {args.label!r} is not in {args.data}; labels are {sorted(labels)}")
        others = [stored for typed, stored in labels.items() if typed != args.label]
        positive = data.with_label(labels[args.label]).sample(args.limit).texts
        negative = data.with_label(*others).sample(args.limit).texts if others else []
    else:
        positive, negative = _texts(args.positive), _texts(args.negative)
    if not positive or not negative:
        raise PolysteerError("contrasting needs examples on both sides: --positive and --negative")
    adapter = load_model_arg(args.model, modality="text")
    site = dictionary.info.site
    dictionary.check_compatible(adapter.model_fingerprint, site, adapter.bind(site).channels)
    read = [drop_sinks(text_activations(adapter, side, site, progress=len(side) > 64, desc=desc),
                       dictionary.info.site_norm)
            for side, desc in ((positive, "positive texts"), (negative, "negative texts"))]
    matches = contrast_features(dictionary, read[0], read[1], top=args.top, pool=args.pool)
    return [(m.index, m.label, f"{m.score:.2f} ({m.pos_mean:.2f} / {m.neg_mean:.2f})") for m in matches]


SEARCH = Command(
    "find dictionary features by label words, by example texts (fire on these, not those), or by "
    "similarity to another feature", _search_args, _search_run)
