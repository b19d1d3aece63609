"""Rebuild the shipped SmolLM2 preference recogniser and measure it on the held-out statements.

    python scripts/build_preferences.py [--out plugins/text/shipped/preferences/smollm2-preferences]

Reads ``plugins/text/shipped/preferences/statements.json`` (preference statements mapped to shipped
styles, "on" or "off", and ordinary requests). Fits, on the ``train`` rows only:

* a detector: "states a preference" vs "ordinary request", a sparse classifier of SmolLM2 SAE
  features (``smollm2-res-sae``) on every train row;
* per preference P, "states P" vs "states another preference", on the train statements;
* a polarity classifier, "turns a preference off" vs "asks for it", on the train statements.

Then loads the written folder back and runs it, as the store does, on the ``test`` rows (never
seen in fitting): precision and recall per preference and overall, written into
``recogniser.json`` (``heldout``) and printed (``--json``: one JSON object). A TF-IDF + logistic
regression baseline on the same split (words only) is measured beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STATEMENTS = ROOT / "plugins" / "text" / "shipped" / "preferences" / "statements.json"
OUT = ROOT / "plugins" / "text" / "shipped" / "preferences" / "smollm2-preferences"
DICTIONARY = "smollm2-res-sae"


def load_statements(path: Path = STATEMENTS) -> tuple[list[str], list[dict]]:
    data = json.loads(path.read_text())
    return data["preferences"], data["rows"]


def evaluate(predicted: list[list[tuple[str, bool]]], rows: list[dict], names: list[str]) -> dict:
    """Precision/recall of (preference, on/off) decisions, per preference and overall.

    Per preference P: a row counts as predicted-P when P is among its decisions, as true-P when it
    states P; ``polarity_accuracy`` is the share of correctly detected statements whose on/off is
    right. Overall counts exact (preference, polarity) pairs, so a right preference with the wrong
    polarity is a false positive and a false negative.
    """
    out: dict = {"per_preference": {}}
    tp_all = fp_all = fn_all = 0
    for name in names:
        tp = fp = fn = pol_ok = 0
        for pred, row in zip(predicted, rows, strict=True):
            got = {n: on for n, on in pred}
            true = row["preference"] == name
            if name in got and true:
                tp += 1
                pol_ok += got[name] == (row["polarity"] == "on")
            elif name in got:
                fp += 1
            elif true:
                fn += 1
        out["per_preference"][name] = {
            "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
            "polarity_accuracy": round(pol_ok / tp, 4) if tp else 0.0,
            "statements": tp + fn}
    for pred, row in zip(predicted, rows, strict=True):
        true = {(row["preference"], row["polarity"] == "on")} if row["preference"] else set()
        got = set(pred)
        tp_all += len(got & true)
        fp_all += len(got - true)
        fn_all += len(true - got)
    found = {(n, i) for i, pred in enumerate(predicted) for n, _ in pred}
    true = {(r["preference"], i) for i, r in enumerate(rows) if r["preference"]}
    out["detection"] = {  # the preference right, whatever its on/off
        "precision": round(len(found & true) / len(found), 4) if found else 0.0,
        "recall": round(len(found & true) / len(true), 4) if true else 0.0}
    ordinary = [pred for pred, row in zip(predicted, rows, strict=True) if not row["preference"]]
    out["overall"] = {
        "precision": round(tp_all / (tp_all + fp_all), 4) if tp_all + fp_all else 0.0,
        "recall": round(tp_all / (tp_all + fn_all), 4) if tp_all + fn_all else 0.0,
        "ordinary_false_alarm_rate": round(sum(bool(p) for p in ordinary) / max(len(ordinary), 1), 4),
        "rows": len(rows), "statements": sum(bool(r["preference"]) for r in rows),
        "ordinary": len(ordinary)}
    return out


def tfidf_baseline(train: list[dict], test: list[dict], names: list[str]) -> list[list[tuple[str, bool]]]:
    """Words only, the same three-part decision: TF-IDF (1-2 grams) + L2 logistic regressions."""
    from polysteer.features import fit_linear
    from polysteer.plugins.text.classify import Tfidf

    tfidf = Tfidf(ngrams=2, min_df=1).fit([r["text"] for r in train])
    xtr, xte = tfidf.transform([r["text"] for r in train]), tfidf.transform([r["text"] for r in test])
    stated = [i for i, r in enumerate(train) if r["preference"]]
    detect = fit_linear(xtr, torch.tensor([float(bool(r["preference"])) for r in train]),
                        penalty="l2").probabilities(xte)
    which = torch.stack([fit_linear(xtr[stated], torch.tensor(
        [float(train[i]["preference"] == n) for i in stated]), penalty="l2").logits(xte) for n in names], 1)
    off = fit_linear(xtr[stated], torch.tensor([float(train[i]["polarity"] == "off") for i in stated]),
                     penalty="l2").probabilities(xte)
    return [[(names[int(which[i].argmax())], bool(off[i] < 0.5))] if detect[i] >= 0.5 else []
            for i in range(len(test))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--statements", type=Path, default=STATEMENTS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="measure the existing folder on the held-out rows again (no fitting)")
    args = parser.parse_args()

    import polysteer as ps
    from polysteer.features import resolve_dictionary
    from polysteer.plugins.text.classify import fit_text_classifier, text_activations
    from polysteer.preferences import FeatureRecogniser, load_recogniser

    torch.manual_seed(0)
    names, rows = load_statements(args.statements)
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    model = ps.load_model("smollm2")
    if args.evaluate_only:
        from polysteer.io import read_json, write_json

        recogniser = load_recogniser(args.out)
        found = recogniser.recognise([r["text"] for r in test], model)
        info = read_json(args.out / "recogniser.json")
        info["heldout"] = evaluate([[(f.name, f.on) for f in one] for one in found], test, names)
        write_json(args.out / "recogniser.json", info)
        print(json.dumps(info["heldout"]))
        return
    dictionary = resolve_dictionary(DICTIONARY)
    site = dictionary.info.site
    start = time.perf_counter()
    acts = text_activations(model, [r["text"] for r in train], site, progress=True)
    texts = [r["text"] for r in train]
    stated = [i for i, r in enumerate(train) if r["preference"]]
    stated_texts, stated_acts = [texts[i] for i in stated], [acts[i] for i in stated]
    detector = fit_text_classifier(model, DICTIONARY, texts,
                                   ["stated" if r["preference"] else "ordinary" for r in train],
                                   positive="stated", name="states-a-preference", acts=acts)
    classifiers = {}
    for name in names:
        labels = [name if train[i]["preference"] == name else "other" for i in stated]
        classifiers[name] = fit_text_classifier(model, DICTIONARY, stated_texts, labels, positive=name,
                                                name=f"prefers-{name}", acts=stated_acts)
    polarity = fit_text_classifier(model, DICTIONARY, stated_texts,
                                   [train[i]["polarity"] for i in stated], positive="off",
                                   name="preference-off", acts=stated_acts)
    fit_s = time.perf_counter() - start
    info = {"format": "polysteer-preference-recogniser", "version": 1, "name": "smollm2-preferences",
            "description": "preferences stated in a user message (SmolLM2 SAE features at "
                           f"{site}), each mapped to the shipped style of the same name",
            "model": model.model_fingerprint.to_json(), "site": site,
            "reader": {"renderer": "text", "renderer_options": {"max_tokens": 128, "padding_side": "right"},
                       "rows": "text-tokens", "rows_options": {"skip_first": False, "outlier_factor": None},
                       "batch_size": 16},
            "detector": {"classifier": "detector", "threshold": 0.5, "positive": "stated"},
            "preferences": {n: {"classifier": n, "style": n} for n in names},
            "polarity": {"classifier": "polarity", "threshold": 0.5, "positive": "off"},
            "data": {"statements": "statements.json", "train": len(train), "test": len(test)}}
    FeatureRecogniser(info, detector, classifiers, polarity).save(args.out)

    # held-out evaluation of exactly what ships: load the folder back, recognise the test rows
    recogniser = load_recogniser(args.out)
    found = recogniser.recognise([r["text"] for r in test], model)
    predicted = [[(f.name, f.on) for f in one] for one in found]
    heldout = evaluate(predicted, test, names)
    baseline = evaluate(tfidf_baseline(train, test, names), test, names)
    info["heldout"] = heldout
    info["heldout_tfidf_baseline"] = {"overall": baseline["overall"]}
    info["features_used"] = {n: len(c.columns) for n, c in
                             [("detector", detector), *classifiers.items(), ("polarity", polarity)]}
    info["fit_seconds"] = round(fit_s, 1)
    from polysteer.io import write_json
    write_json(args.out / "recogniser.json", info)
    errors = [{"text": r["text"], "true": [r["preference"], r["polarity"]], "predicted": p}
              for r, p in zip(test, predicted, strict=True)
              if set(p) != ({(r["preference"], r["polarity"] == "on")} if r["preference"] else set())]
    if args.json:
        print(json.dumps({"heldout": heldout, "tfidf_baseline": baseline, "errors": errors}))
        return
    print(f"held-out ({len(test)} rows: {heldout['overall']['statements']} statements, "
          f"{heldout['overall']['ordinary']} ordinary requests)")
    print(f"{'preference':<12}{'precision':>10}{'recall':>8}{'polarity':>10}{'n':>4}")
    for name, m in heldout["per_preference"].items():
        print(f"{name:<12}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['polarity_accuracy']:>10.3f}"
              f"{m['statements']:>4}")
    for label, m in (("overall", heldout["overall"]), ("tfidf base", baseline["overall"])):
        print(f"{label:<12}{m['precision']:>10.3f}{m['recall']:>8.3f}   false alarms on ordinary: "
              f"{m['ordinary_false_alarm_rate']:.3f}")
    for e in errors:
        print("  miss:", e)


if __name__ == "__main__":
    main()
