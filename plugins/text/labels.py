"""Labels for text features: top contexts, promoted tokens, a rule-made label, verified by effect.

* :func:`collect_text_reports` runs the model over texts and streams the dictionary's feature
  values into :class:`~polysteer.features.FeatureReport` s, then adds each feature's top contexts
  with the firing token highlighted (``…the «cat» sat…``) and the tokens it promotes through the
  unembedding (decoder direction, times the final norm's weight, through ``lm_head``).
* :func:`auto_label` names each feature by rule: its most frequent firing token if that dominates
  the top contexts, else its top promoted tokens. User labels are left alone.
* :func:`verify_labels` steers with each feature (``add`` at a moderate intensity) over a few
  neutral prompts and measures the change in mean log-probability of the label's tokens in the
  next-token distribution (teacher-forced: every position of the prompts, steered minus
  unsteered). Features whose score is below a threshold are flagged: their label does not hold.
  The workflow is core's label-by-effect (:mod:`polysteer.workflows.label_effect`); this module gives it
  the ``text-logprob`` effect measure (:func:`label_logprob`).
* :func:`label_dictionary` does all of it and saves the labels with the dictionary.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from polysteer.features import (
    FeatureDictionary,
    FeatureReport,
    ReportCollector,
    apply_labels,
    dictionary_search_path,
    keep_user_labels,
    resolve_dictionary,
)
from polysteer.steering import Style, steer
from polysteer.workflows import Candidate, EffectMeasure, measure_effects

NEUTRAL_PROMPTS = (
    "The weather today is",
    "I went to the store and",
    "Here is a short story about",
    "My favourite thing to do is",
    "The meeting starts at",
    "She opened the door and",
)
"""Prompts with no particular topic, used to verify labels by effect."""

BPE_MARKERS = ("Ġ", "▁", "Ċ", "ĉ")
VERIFY_INTENSITY = 0.5
VERIFY_THRESHOLD = 0.05
"""A label holds when steering raises its tokens' mean log-probability by at least this (nats)."""


# -- tokens -------------------------------------------------------------------------------------
def clean_token(tokenizer: Any, token_id: int) -> str:
    """A token as a word: decoded, BPE markers (``Ġ``, ``▁``) removed, whitespace stripped; a
    token of only whitespace shows as ``⏎`` (newlines) or ``␣``."""
    text = tokenizer.decode([int(token_id)])
    if text and not text.strip():
        return "⏎" if "\n" in text else "␣"
    if not text.strip():
        text = tokenizer.convert_ids_to_tokens(int(token_id)) or ""
    for marker in BPE_MARKERS:
        text = text.replace(marker, " ")
    return text.strip()


def starts_word(tokenizer: Any, token_id: int) -> bool:
    """Whether a token begins a word (a leading space or BPE word marker)."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id)) or ""
    return piece[:1] in ("Ġ", "▁", " ") or tokenizer.decode([int(token_id)])[:1] == " "


def render_context(tokenizer: Any, ids: Sequence[int], position: int, window: int = 8) -> str:
    """The tokens around ``position`` with the firing token in «guillemets», e.g.
    ``…the «cat» sat…``; ``…`` marks where the text goes on, newlines show as ``⏎``."""
    ids = [int(i) for i in ids]
    start, end = max(0, position - window), min(len(ids), position + window + 1)
    before = tokenizer.decode(ids[start:position])
    with_token = tokenizer.decode(ids[start:position + 1])
    whole = tokenizer.decode(ids[start:end])
    if with_token.startswith(before) and whole.startswith(with_token):
        token, after = with_token[len(before):], whole[len(with_token):]
    else:  # decoding is not prefix-stable here: fall back to token by token
        pieces = [tokenizer.decode([i]) for i in ids[start:end]]
        before, token = "".join(pieces[:position - start]), pieces[position - start]
        after = "".join(pieces[position - start + 1:])
    lead = token[:len(token) - len(token.lstrip())]
    text = f"{before}{lead}«{token.strip() or token}»{after}".replace("\n", "⏎")
    return ("…" if start > 0 else "") + text + ("…" if end < len(ids) else "")


def _final_norm(model: Any) -> Any:
    base = getattr(model, "base_model", model)
    for name in ("norm", "ln_f", "final_layer_norm", "final_norm"):
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


@torch.no_grad()
def promoted_logits(adapter: Any, directions: torch.Tensor) -> torch.Tensor:
    """``(features, vocab)`` logit effect of each direction: ``lm_head(norm_weight * d)``.

    The final norm is approximated by its elementwise weight (and mean-centring for a LayerNorm);
    its division by the token's norm is a positive factor that does not change the ranking.
    """
    model = adapter.model
    head = model.get_output_embeddings()
    weight = head.weight
    d = directions.to(weight.device, torch.float32)
    norm = _final_norm(model)
    if norm is not None:
        if isinstance(norm, torch.nn.LayerNorm) or getattr(norm, "bias", None) is not None:
            d = d - d.mean(dim=-1, keepdim=True)
        scale = getattr(norm, "weight", None)
        if isinstance(scale, torch.Tensor) and scale.shape == d.shape[-1:]:
            d = d * scale.float()
    return d @ weight.float().T


def promoted_tokens(adapter: Any, dictionary: FeatureDictionary, features: Sequence[int] | None = None,
                    k: int = 10, chunk: int = 256) -> dict[int, list[tuple[int, str, float]]]:
    """Per feature, the ``k`` tokens it promotes most: ``[(token_id, word, logit effect), ...]``.

    Special tokens and tokens that clean to nothing are skipped.
    """
    tokenizer = adapter.tokenizer
    features = list(range(dictionary.d_features)) if features is None else list(features)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    directions = dictionary.directions.detach()
    out: dict[int, list[tuple[int, str, float]]] = {}
    for start in range(0, len(features), chunk):
        part = features[start:start + chunk]
        logits = promoted_logits(adapter, directions[part])
        logits[:, [i for i in special if i < logits.shape[1]]] = -torch.inf
        top = logits.topk(min(logits.shape[1], k + 8), dim=-1)
        for f, values, ids in zip(part, top.values.tolist(), top.indices.tolist(), strict=True):
            words = [(i, clean_token(tokenizer, i), v) for i, v in zip(ids, values, strict=True)
                     if v != -torch.inf]
            out[f] = [w for w in words if w[1]][:k]
    return out


# -- reports ------------------------------------------------------------------------------------
def _device(adapter: Any) -> torch.device:
    return next(iter(adapter.model.parameters()), torch.empty(0)).device


@torch.no_grad()
def collect_text_reports(adapter: Any, dictionary: FeatureDictionary | str, texts: Sequence[str],
                         top_k: int = 10, batch_size: int = 8, window: int = 8, promoted_k: int = 10,
                         skip_first: bool = True, progress: bool = False, max_tokens: int = 128,
                         ) -> list[FeatureReport]:
    """Reports for every feature from ``texts``, with contexts and promoted tokens in ``details``.

    Each text is read up to ``max_tokens`` tokens.
    ``details`` holds ``contexts`` (rendered, one per top example), ``firing`` (the firing token
    as a word, per top example), ``firing_ids`` and ``promoted`` / ``promoted_ids``. The first
    token of each text (an attention sink in most models) is skipped unless ``skip_first=False``.
    """
    d = resolve_dictionary(dictionary)
    site = d.info.site
    d.check_compatible(adapter.model_fingerprint, site, adapter.bind(site).channels)
    d.to(_device(adapter))
    collector = ReportCollector(d, top_k)
    texts = list(texts)
    skip = 1 if skip_first else 0
    for start in tqdm(range(0, len(texts), batch_size), desc="reading features", unit="batch",
                      disable=not progress):
        # right padding: every text keeps its own positions, whatever its batch
        encoded = adapter.encode(texts[start:start + batch_size], chat=False, max_tokens=max_tokens,
                                 padding_side="right")
        with steer(adapter, None, capture=[site]) as run:
            _, mask = adapter.forward(encoded)
        acts = run.captured(site)
        for row, (values, row_mask) in enumerate(zip(acts, mask.bool(), strict=True)):
            collector.add(values[row_mask][skip:], example=start + row, offset=skip)
    reports = collector.reports()
    _add_text_details(adapter, reports, texts, window, promoted_k, d)
    return reports


def _add_text_details(adapter: Any, reports: list[FeatureReport], texts: list[str], window: int,
                      promoted_k: int, dictionary: FeatureDictionary) -> None:
    tokenizer = adapter.tokenizer
    cache: dict[int, list[int]] = {}

    def ids_of(example: int) -> list[int]:
        if example not in cache:
            encoded = adapter.encode([texts[example]], chat=False)
            cache[example] = encoded["input_ids"][0][encoded["attention_mask"][0].bool()].tolist()
        return cache[example]

    promoted = promoted_tokens(adapter, dictionary, k=promoted_k)
    for report in reports:
        contexts, firing, firing_ids = [], [], []
        for top in report.top:
            ids = ids_of(top.example)
            contexts.append(render_context(tokenizer, ids, top.position, window))
            firing_ids.append(ids[top.position])
            firing.append(clean_token(tokenizer, ids[top.position]))
        report.details.update(
            contexts=contexts, firing=firing, firing_ids=firing_ids,
            promoted=[w for _, w, _ in promoted[report.feature]],
            promoted_ids=[i for i, _, _ in promoted[report.feature]],
            promoted_starts=[starts_word(tokenizer, i) for i, _, _ in promoted[report.feature]])


TOKEN_CLASSES = (("digits", str.isdigit), ("punctuation", lambda w: not any(c.isalnum() for c in w)),
                 ("capitalised words", lambda w: w[:1].isupper() and w[1:].islower()))
"""Classes of firing words a feature may fire on as a whole (checked in this order)."""


def _token_class(firing: Sequence[str], share: float) -> str | None:
    """The class most firing words belong to (``digits``...), if more than ``share`` of them do."""
    for name, member in TOKEN_CLASSES:
        if sum(bool(w) and member(w) for w in firing) / len(firing) > share:
            return name
    return None


def _promoted_label(details: dict[str, Any], words: int) -> tuple[str, list[int]] | None:
    chosen: list[tuple[int, str]] = []
    promoted = list(zip(details.get("promoted_ids", []), details.get("promoted", []), strict=True))
    starts = details.get("promoted_starts") or [False] * len(promoted)
    rank = {p: (not s, not any(c.isalnum() for c in p[1])) for p, s in zip(promoted, starts, strict=True)}
    promoted.sort(key=rank.__getitem__)  # stable: whole words, then with letters, first
    for token_id, w in promoted:
        if w.lower() not in {c[1].lower() for c in chosen}:
            chosen.append((token_id, w))
        if len(chosen) == words:
            break
    return (" / ".join(w for _, w in chosen), [i for i, _ in chosen]) if chosen else None


def auto_label(reports: Sequence[FeatureReport], dominance: float = 0.5, words: int = 3,
               class_share: float = 0.7) -> list[FeatureReport]:
    """Label each ``auto`` report by rule (in place); ``user`` labels are never touched.

    The rules, first match wins (``details["label_rule"]`` records which):

    1. ``firing token``: one firing word accounts for more than ``dominance`` of the top contexts;
       the label is that word.
    2. ``token class``: more than ``class_share`` of the firing words are digits, punctuation or
       capitalised words; the label names the class (``digits``).
    3. ``firing words``: the ``words`` most frequent distinct firing words, joined with ``" / "``.
    4. ``promoted tokens``: a feature that never fired on the corpus is named by the first
       ``words`` distinct tokens it promotes through the unembedding (whole words first).

    ``details["label_tokens"]`` records the token ids behind the label (what
    :func:`verify_labels` tests by effect).
    """
    for report in reports:
        if report.source == "user":
            continue
        details = report.details
        firing, firing_ids = details.get("firing", []), details.get("firing_ids", [])
        counts = Counter(w.lower() for w in firing if w)
        if counts:
            label, rule, keep = _firing_label(firing, counts, dominance, class_share, words)
            report.label = label
            details["label_tokens"] = sorted({i for i, w in zip(firing_ids, firing, strict=True)
                                              if keep(w)})
            details["label_rule"] = rule
            continue
        promoted = _promoted_label(details, words)
        if promoted:
            report.label, details["label_tokens"] = promoted
            details["label_rule"] = "promoted tokens"
    return list(reports)


def _firing_label(firing: Sequence[str], counts: Counter, dominance: float, class_share: float,
                  words: int) -> tuple[str, str, Any]:
    """(label, rule, which firing words it stands for) from a feature's firing words."""
    word, count = counts.most_common(1)[0]
    if count / len(firing) > dominance:
        forms = Counter(w for w in firing if w.lower() == word)
        return forms.most_common(1)[0][0], "firing token", lambda w: w.lower() == word
    token_class = _token_class(firing, class_share)
    if token_class is not None:
        member = dict(TOKEN_CLASSES)[token_class]
        return token_class, "token class", lambda w: bool(w) and member(w)
    top = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], _firing_order(firing, kv[0])))]
    top = top[:words]
    shown = [Counter(w for w in firing if w.lower() == t).most_common(1)[0][0] for t in top]
    return " / ".join(shown), "firing words", lambda w: w.lower() in top


def _firing_order(firing: Sequence[str], word: str) -> int:
    """Where ``word`` first appears among the firing words (top context first)."""
    return next(i for i, w in enumerate(firing) if w.lower() == word)


def label_tokens(adapter: Any, report: FeatureReport) -> list[int]:
    """The token ids a label stands for: recorded by :func:`auto_label`, or for a user label its
    words as tokens (with and without a leading space; unknown tokens dropped)."""
    if report.source != "user" and report.details.get("label_tokens"):
        return [int(i) for i in report.details["label_tokens"]]
    tokenizer = adapter.tokenizer
    unk = getattr(tokenizer, "unk_token_id", None)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids: set[int] = set()
    for word in report.label.replace("/", " ").split():
        for variant in (word, " " + word):
            pieces = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if pieces and pieces[0] != unk and pieces[0] not in special:
                ids.add(int(pieces[0]))
    return sorted(ids)


LOGPROB_MEASURE = "text-logprob"
"""The text plugin's effect measure: mean log-probability of given tokens at every prompt position."""


@torch.no_grad()
def label_logprob(adapter: Any, prompts: Sequence[str], style: Style | None, intensity: float,
                  options: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Per real prompt position (teacher-forced, one forward pass), the mean log-probability of
    each token set in ``options["tokens"]`` (``{measure name: token ids}``) in the next-token
    distribution: ``{name: (positions,)}``. Registered as the ``text-logprob`` effect measure."""
    with steer(adapter, style, intensity):
        logits, mask = adapter.forward(list(prompts))
    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = mask.bool().to(logp.device)
    return {name: logp[..., torch.tensor(list(ids), device=logp.device)][mask].mean(-1)
            for name, ids in options["tokens"].items()}


TEXT_EFFECT = EffectMeasure(label_logprob, "text", "mean log-probability of a label's tokens at every "
                            "position of neutral prompts (teacher-forced)")


def verify_labels(adapter: Any, dictionary: FeatureDictionary | str, reports: Sequence[FeatureReport],
                  prompts: Sequence[str] = NEUTRAL_PROMPTS, intensity: float = VERIFY_INTENSITY,
                  threshold: float = VERIFY_THRESHOLD, features: Sequence[int] | None = None,
                  progress: bool = False) -> list[dict[str, Any]]:
    """Verify labels by effect; sets ``effect_score`` and ``flagged`` on the reports.

    For each feature (all, or ``features``) with label tokens, steer with it (``add`` at
    ``intensity`` site norms) over ``prompts`` and score the mean log-probability of its label
    tokens in the next-token distribution, steered minus unsteered, over every prompt position
    (core's :func:`~polysteer.workflows.measure_effects` with the ``text-logprob`` measure).
    A score not above ``threshold`` flags the label. Returns a row per verified feature:
    ``{"feature", "label", "score", "flagged", "tokens"}``.
    """
    d = resolve_dictionary(dictionary)
    d.check_compatible(adapter.model_fingerprint, d.info.site, adapter.bind(d.info.site).channels)
    wanted = range(len(reports)) if features is None else [int(f) for f in features]
    tokens: dict[str, list[int]] = {}
    found: list[Candidate] = []
    for index in wanted:
        report = reports[index]
        ids = label_tokens(adapter, report)
        if not ids:
            report.effect_score, report.flagged = None, False
            continue
        name = f"tokens {','.join(map(str, ids))}"  # features with the same tokens share a baseline
        tokens[name] = ids
        found.append(Candidate(report.feature, name))
    outcomes = measure_effects(adapter, d, found, list(prompts), TEXT_EFFECT, intensity=intensity,
                               floors=threshold, options={"tokens": tokens}, progress=progress)
    rows = []
    for outcome in outcomes:
        report = reports[outcome.feature]
        report.effect_score, report.flagged = outcome.change, not outcome.holds
        report.details["verify"] = {"intensity": intensity, "threshold": threshold,
                                    "prompts": len(prompts)}
        rows.append({"feature": report.feature, "label": report.label, "score": outcome.change,
                     "flagged": report.flagged, "tokens": tokens[outcome.measure]})
    return rows


def label_dictionary(adapter: Any, dictionary: FeatureDictionary | str, texts: Sequence[str],
                     folder: str | os.PathLike | None = None, top_k: int = 10, verify: bool = True,
                     verify_features: Sequence[int] | None = None, intensity: float = VERIFY_INTENSITY,
                     threshold: float = VERIFY_THRESHOLD, prompts: Sequence[str] = NEUTRAL_PROMPTS,
                     batch_size: int = 8, progress: bool = False) -> list[FeatureReport]:
    """Collect reports, label automatically (keeping user labels in ``folder``), verify by
    effect, and set the labels on the dictionary (saving dictionary and ``labels.json`` in
    ``folder`` if given)."""
    d = resolve_dictionary(dictionary)
    reports = collect_text_reports(adapter, d, texts, top_k=top_k, batch_size=batch_size,
                                   progress=progress)
    if folder is not None:
        keep_user_labels(reports, folder)
    auto_label(reports)
    if verify:
        verify_labels(adapter, d, reports, prompts, intensity, threshold, verify_features, progress)
    return apply_labels(d, reports, folder)


def feature_card(report: FeatureReport) -> str:
    """A multi-line description of one report: label, stats, contexts, promoted tokens."""
    score = "not verified" if report.effect_score is None else (
        f"{report.effect_score:+.3f}{' (label does not hold)' if report.flagged else ''}")
    lines = [f"feature {report.feature}: {report.label} [{report.source}]",
             f"  density {report.density:.4f} over {report.positions} positions; effect {score}"]
    if report.details.get("promoted"):
        lines.append(f"  promotes: {', '.join(report.details['promoted'])}")
    contexts = report.details.get("contexts", [])
    for top, context in zip(report.top, contexts, strict=False):
        lines.append(f"  {top.value:8.3f}  {context}")
    if report.histogram and sum(report.histogram):
        peak = max(report.histogram)
        lines.append("  histogram (value: count)")
        for lo, count in zip(report.bin_edges, report.histogram, strict=False):
            lines.append(f"  {lo:8.3f} {'#' * max(1 if count else 0, round(30 * count / peak))} {count}")
    return "\n".join(lines)


# -- dictionaries and corpora named on the command line --------------------------------------------
def dictionary_folder(ref: str) -> Path:
    """The folder of a dictionary given as a path or a name on the dictionary search path."""
    if Path(ref).is_dir():
        return Path(ref)
    for folder in dictionary_search_path():
        if (folder / ref).is_dir():
            return folder / ref
    raise FileNotFoundError(f"dictionary {ref!r} not found; looked in: "
                            f"{', '.join(map(str, dictionary_search_path()))}")


def corpus_texts(datasets: Sequence[str], limit: int, seed: int = 0) -> list[str]:
    """Up to ``limit`` texts of each dataset (a stratified sample where it has more), in order."""
    from polysteer.data import load_dataset

    texts: list[str] = []
    for name in datasets:
        texts += load_dataset(name.strip()).sample(limit, seed=seed).texts
    return texts
