"""Rebuild the shipped spam classifier ``smollm2-sms-spam`` and measure it on held-out check sets.

The fit is one ``polysteer classify fit`` command:

* SMS spam (``sms-spam``, a stratified sample; a third held out);
* plus, for fitting only (``--train-extra``), texts the SMS corpus lacks: scams of other kinds and
  ordinary messages about the same things (family, parcels, banks, accounts), SMS- and e-mail-style,
  written for polysteer (``scripts/data/spam_training_extra.jsonl``), and a stratified sample of
  the SpamAssassin e-mail corpus;
* the digit guard (``--digit-share 0.5``): features with more than half of their activation on
  digit tokens are left out, and every training text holding numbers, of either class, is also
  trained on with its numbers stripped (a digit-free counterfactual).

Then it measures, on texts never used for fitting or for choosing these settings: the held-out SMS
split; the digit-free counterfactuals of the held-out SMS (each held-out text with numbers, numbers
stripped); the shortcut probe ``tests/text/data/spam_shortcuts.json`` (hand-written digit pairs,
scams of other kinds, e-mail spam, ordinary messages); and SpamAssassin e-mails outside the
training sample. The figures go into ``classifier.json`` (``heldout_checks``) and are printed.

    python scripts/build_spam_classifier.py              # as shipped (50 min on a busy 2-core machine)
    python scripts/build_spam_classifier.py --no-ship    # measure only
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "plugins/text/shipped/classifier/smollm2-sms-spam"
RETIRED = ROOT / "plugins/text/shipped/classifier/smollm2-sms-spam-digitfree"
PROBE = ROOT / "tests/text/data/spam_shortcuts.json"
EXTRA = ROOT / "scripts/data/spam_training_extra.jsonl"


def _pr(probs: list[float], truth: list[bool], threshold: float) -> dict[str, float]:
    """Precision, recall, accuracy and counts at ``threshold``."""
    pred = [p >= threshold for p in probs]
    tp = sum(a and b for a, b in zip(pred, truth, strict=True))
    fp = sum(a and not b for a, b in zip(pred, truth, strict=True))
    fn = sum(b and not a for a, b in zip(pred, truth, strict=True))
    right = sum(a == b for a, b in zip(pred, truth, strict=True))
    return {"precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
            "accuracy": round(right / len(pred), 4), "texts": len(pred), "positives": sum(truth)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=1200, help="SMS texts sampled (default 1200)")
    p.add_argument("--test-fraction", type=float, default=1 / 3)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--digit-share", type=float, default=0.5)
    p.add_argument("--emails", type=int, default=200,
                   help="SpamAssassin e-mails added to fitting (0: none)")
    p.add_argument("--email-check", type=int, default=100,
                   help="other SpamAssassin e-mails measured (0: none)")
    p.add_argument("--classifier", help="measure this fitted classifier folder instead of fitting")
    p.add_argument("--no-ship", action="store_true", help="measure only; leave the shipped copy")
    args = p.parse_args()

    from polysteer.cli import load_model_arg
    from polysteer.data import load_dataset
    from polysteer.features import load_classifier
    from polysteer.io import write_json
    from polysteer.plugins.text.classify import DIGIT_RUN, predict_texts, strip_digits
    from polysteer.plugins.text.shortcuts import load_probe, shortcut_report

    work = Path(tempfile.mkdtemp(prefix="spam-classifier-"))
    folder = Path(args.classifier) if args.classifier else None
    extra = [EXTRA.relative_to(ROOT).as_posix()] + ([f"spam-assassin:{args.emails}"] if args.emails else [])
    if folder is None:
        subprocess.run([sys.executable, "-m", "polysteer", "classify", "fit", "--data", "sms-spam",
                        "--limit", str(args.limit), "--test-fraction", str(args.test_fraction),
                        "--folds", str(args.folds), "--digit-share", str(args.digit_share),
                        *[a for source in extra for a in ("--train-extra", source)],
                        "--name", "sms-spam", "--out", str(work)], check=True, cwd=ROOT)
        folder = next(work.glob("*/classifier"))
    classifier = load_classifier(folder)
    adapter = load_model_arg("smollm2", modality="text")
    t = classifier.threshold

    def probs(texts: list[str]) -> list[float]:
        return [x.probability for x in predict_texts(adapter, classifier, texts, top=0, progress=True)]

    checks: dict[str, object] = {}
    sms = load_dataset("sms-spam").sample(args.limit, seed=0)
    test = sms.split(test_fraction=args.test_fraction, seed=0)[1]
    heldout = classifier.info.get("heldout", {}).get("features", {})
    checks["sms"] = {k: heldout[k] for k in ("precision", "recall", "accuracy", "roc_auc") if k in heldout}
    checks["sms"]["texts"] = len(test)
    pairs = zip(test.texts, test.labels, strict=True)
    with_digits = [(strip_digits(x), str(lab) == "spam") for x, lab in pairs
                   if DIGIT_RUN.search(x) and strip_digits(x)]
    checks["sms_digit_free"] = _pr(probs([x for x, _ in with_digits]), [y for _, y in with_digits], t)
    probe = load_probe(PROBE)
    report = shortcut_report(adapter, classifier, probe)
    checks["probe"] = report
    ham = probs(list(probe["ham"]))
    for group in ("other_spam", "email_spam"):
        got = probs(list(probe[group]))
        checks[f"probe_{group}"] = _pr(got + ham, [True] * len(got) + [False] * len(ham), t)
    if args.email_check:
        emails = load_dataset("spam-assassin")
        used = set(emails.sample(args.emails, seed=0).texts) if args.emails else set()
        rest = emails.split(test_fraction=args.emails / len(emails), seed=0)[0] if args.emails else emails
        check = rest.sample(args.email_check, seed=1)
        assert not used & set(check.texts), "an e-mail measured was fitted on"
        checks["spamassassin"] = _pr(probs(check.texts), [str(lab) == "spam" for lab in check.labels], t)
    print(json.dumps(checks, indent=2))
    if args.no_ship:
        return
    meta = json.loads((folder / "classifier.json").read_text())
    meta["name"] = SHIPPED.name
    meta["heldout_checks"] = {"about": "texts never used for fitting or for choosing settings "
                                       "(scripts/build_spam_classifier.py)", **checks}
    staged = work / "ship"
    shutil.copytree(folder, staged)
    write_json(staged / "classifier.json", meta)
    for old in (SHIPPED, RETIRED):
        if old.exists():
            shutil.rmtree(old)
    shutil.copytree(staged, SHIPPED)
    print(f"shipped {SHIPPED}")


if __name__ == "__main__":
    main()
