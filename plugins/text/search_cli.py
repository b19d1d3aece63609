"""``polysteer search`` (:data:`SEARCH`): find dictionary features by label, by example texts, or by
similarity."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

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
    p.add_argument("--limit", type=int, default=200,
                   help="texts per side sampled from --data (default 200; 0 reads them all)")
    p.add_argument("--max-tokens", type=int, default=64,
                   help="tokens read per text (default 64: an SMS fits; longer texts are cut)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--no-cache", action="store_true",
                   help="read the texts again instead of reusing pooled features cached in "
                        "~/.cache/polysteer/search for the same model, dictionary and texts")
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
    from polysteer.features import contrast_pooled

    if args.data:
        from polysteer.data import load_dataset

        if not args.label:
            raise PolysteerError("--data needs --label: which label's texts are the positive examples")
        if args.limit < 0:
            raise PolysteerError(f"--limit must be 0 (all texts) or more, got {args.limit}")
        data = load_dataset(args.data)
        labels = {str(lab): lab for lab in data.labels if lab is not None}  # as typed -> as stored
        if args.label not in labels:
            raise PolysteerError(f"label {args.label!r} is not in {args.data}; labels are {sorted(labels)}")
        others = [stored for typed, stored in labels.items() if typed != args.label]
        positive_data = data.with_label(labels[args.label])
        negative_data = data.with_label(*others) if others else None
        positive = (positive_data.sample(args.limit) if args.limit else positive_data).texts
        negative = ((negative_data.sample(args.limit) if args.limit else negative_data).texts
                    if negative_data is not None else [])
    else:
        positive, negative = _texts(args.positive), _texts(args.negative)
    if not positive or not negative:
        raise PolysteerError("contrasting needs examples on both sides: --positive and --negative")
    if args.max_tokens < 1 or args.batch_size < 1:
        raise PolysteerError(f"--max-tokens and --batch-size must be at least 1, got {args.max_tokens} "
                             f"and {args.batch_size}")
    adapter = load_model_arg(args.model, modality="text")
    site = dictionary.info.site
    dictionary.check_compatible(adapter.model_fingerprint, site, adapter.bind(site).channels)
    pooled = [pooled_texts(adapter, dictionary, side, pool=args.pool, max_tokens=args.max_tokens,
                           batch_size=args.batch_size, cache=not args.no_cache, desc=desc)
              for side, desc in ((positive, "positive texts"), (negative, "negative texts"))]
    if not len(pooled[0]) or not len(pooled[1]):
        raise PolysteerError("no text is left on one side once attention sinks are dropped (one-token "
                             "texts have none): give longer example texts")
    matches = contrast_pooled(dictionary, pooled[0], pooled[1], top=args.top)
    return [(m.index, m.label, f"{m.score:.2f} ({m.pos_mean:.2f} / {m.neg_mean:.2f})") for m in matches]


CACHE_FILES = 16
"""Pooled-feature files kept in ``~/.cache/polysteer/search`` (the oldest go first)."""


def _cache_key(adapter: Any, dictionary: Any, texts: list[str], pool: str, max_tokens: int) -> str:
    from polysteer.features import dictionary_digest

    digest = hashlib.sha256()
    header = {"model": adapter.model_fingerprint.to_json(), "dictionary": dictionary_digest(dictionary),
              "site": dictionary.info.site, "site_norm": dictionary.info.site_norm, "pool": pool,
              "max_tokens": max_tokens, "format": 1}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    return digest.hexdigest()[:32]


def pooled_texts(adapter: Any, dictionary: Any, texts: list[str], *, pool: str = "max",
                 max_tokens: int = 64, batch_size: int = 32, cache: bool = True,
                 desc: str = "reading texts") -> Any:
    """``(texts kept, d_features)``: each text's dictionary features pooled over its tokens, as
    ``polysteer search`` contrasts them.

    Tokens are read as classifiers read them (at most ``max_tokens`` per text, attention sinks
    dropped: :func:`~polysteer.plugins.text.classify.drop_sinks`). A text with no token left (a
    one-token message such as "Ok", whose only token is the sink) is left out, and a line on stderr
    says how many were. With ``cache`` the result is kept in ``~/.cache/polysteer/search`` under a
    hash of the model fingerprint, dictionary tensors, pool, ``max_tokens`` and the texts, so the
    same search again skips the model.
    """
    import torch

    from polysteer.features import pool_activations
    from polysteer.io import home, read_tensors, say, write_tensors
    from polysteer.plugins.text.classify import drop_sinks, text_activations

    cache = cache and dictionary.site_norm_known  # an estimated norm is not a stable key
    path = home() / "search" / f"{_cache_key(adapter, dictionary, texts, pool, max_tokens)}.safetensors"
    cached = None
    if cache and path.is_file():
        try:
            cached = read_tensors(path)
            pooled, left_out = cached["pooled"], cached["left_out"].tolist()
            say(f"{desc}: reusing {len(pooled)} pooled texts cached in {path}")
        except (PolysteerError, KeyError, OSError):
            cached = None  # a damaged cache file is read again below and replaced
    if cached is None:
        raw = text_activations(adapter, texts, dictionary.info.site, batch_size=batch_size,
                               max_tokens=max_tokens, progress=True, desc=desc)
        estimate = dictionary.ensure_site_norm(torch.cat(raw)) if raw else None
        if estimate is not None:
            say(f"{dictionary.describe()}: it has no site norm, so {estimate:.4g} was estimated from "
                f"the {desc} (in memory only)")
        acts = drop_sinks(raw, dictionary.info.site_norm)
        kept = [a for a in acts if len(a)]
        left_out = [i for i, a in enumerate(acts) if not len(a)]
    if left_out:
        say(f"{desc}: left out {len(left_out)} text(s) with no token past the attention sink, e.g. "
            f"{texts[left_out[0]][:40]!r}")
    if cached is not None:
        return pooled
    pooled = pool_activations(dictionary, kept, pool) if kept else torch.zeros(0, dictionary.d_features)
    if cache:
        write_tensors(path, {"pooled": pooled, "left_out": torch.tensor(left_out, dtype=torch.long)})
        old = sorted(path.parent.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        for stale in old[:-CACHE_FILES]:
            stale.unlink(missing_ok=True)
    return pooled


SEARCH = Command(
    "find dictionary features by label words, by example texts (fire on these, not those), or by "
    "similarity to another feature", _search_args, _search_run)
