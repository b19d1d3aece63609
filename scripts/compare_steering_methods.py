#!/usr/bin/env python
"""Issue 15 item 3: do other ways of steering beat a difference of means at one layer?

    python scripts/compare_steering_methods.py                  # default concepts, writes the JSON
    python scripts/compare_steering_methods.py pirate french --prompts 4 --new-tokens 16

For each concept (its build examples in ``configs/concepts/NAME.yaml``, its held-out judge in
``configs/judges/NAME.yaml``) it builds and calibrates these variants on SmolLM2:

* ``mean-diff``: the shipped dictionary (difference of means at the spec's layer), every position;
* ``generated-only``: the same direction, added only at generated positions (the prompt is left alone);
* ``multi-layer``: differences of means at layers L-3, L and L+3, each at a third of the weight;
* ``pca``: the first principal component of the paired differences at layer L.

Each variant is calibrated (:func:`polysteer.calibrate`, the same judge and coherence bound as the
shipped calibrations) on the first ``--prompts`` calibration prompts; its *calibrated score* is the
judge's score at the strongest coherent point. The best variant per concept is then checked against
``mean-diff`` on the held-out evaluation prompts (``configs/evaluation/prompts.yaml``, ``evaluate``),
each at its own calibrated intensity. Results: ``docs/figures/steering-methods.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures" / "steering-methods.json"
CONCEPTS = ("pirate", "french", "formal", "positive")
GRID = (0.5, 1.0, 2.0, 3.0)


def variants(model, name: str) -> dict:
    import polysteer as ps
    from polysteer.plugins.text.concepts import ConceptSpec

    spec = ConceptSpec.load(ROOT / "configs" / "concepts" / f"{name}.yaml")
    layer = int(spec.site.split(".")[1])
    w = float(spec.intensity)
    shipped = f"smollm2-{name}"

    def one(dictionary, feature, weight, **extra):
        return ps.Component(name=str(feature), dictionary=dictionary, feature=feature, weight=weight, **extra)

    out = {"mean-diff": ps.Style(name=f"{name}-mean-diff", components=[one(shipped, name, w)]),
           "generated-only": ps.Style(name=f"{name}-generated-only",
                                      components=[one(shipped, name, w, positions={"kind": "generated"})])}
    comps = []
    for at in (layer - 3, layer, layer + 3):
        d = ps.concept(model, spec.positive, spec.negative, site=f"blocks.{at}.resid_post", name=name,
                       intensity=w)
        comps.append(ps.Component(name=f"{name}-L{at}", dictionary=d, feature=name, weight=w / 3))
    out["multi-layer"] = ps.Style(name=f"{name}-multi-layer", components=comps)
    pca = ps.concept(model, spec.positive, spec.negative, site=spec.site, name=name, intensity=w,
                     method="pca")
    out["pca"] = ps.Style(name=f"{name}-pca", components=[one(pca, name, w)])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("concepts", nargs="*", default=list(CONCEPTS))
    parser.add_argument("--prompts", type=int, default=4, help="calibration prompts used")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--report", action="store_true", help="only write the table in docs/evaluation.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.report:
        report()
        return 0
    import polysteer as ps
    from polysteer.plugins.text.evaluation import TextCalibrationJudge, evaluation_prompts
    from polysteer.steering import raw_intensities
    from polysteer.workflows import judge_spec

    model = ps.load_model("smollm2")
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in args.concepts:
        spec = judge_spec(name)
        tokens = max(args.new_tokens, int(spec["text"].get("new_tokens", 0)))
        prompts = evaluation_prompts("calibrate")[:args.prompts]
        judge = TextCalibrationJudge(model, spec, prompts=prompts, new_tokens=tokens)
        held_out = TextCalibrationJudge(model, spec, prompts=evaluation_prompts("evaluate"),
                                        new_tokens=tokens)
        row = {}
        styles = variants(model, name)
        for variant, style in styles.items():
            cal = ps.calibrate(model, style, judge=judge, grid=GRID, progress=True)
            top = next(p for p in cal.points if p["intensity"] == cal.high)
            row[variant] = {"high": cal.high, "coherent": cal.coherent, "calibrated_score": top["score"],
                            "calibrated_expressed": top["expressed"], "coherence": top["coherence"],
                            "unsteered_score": cal.points[0]["score"],
                            "points": [{k: v for k, v in p.items() if k != "texts"} for p in cal.points]}
            print(f"{name} {variant}: high {cal.high} score {top['score']:.3f} expressed "
                  f"{top['expressed']:.2f} coherent={cal.coherent}", file=sys.stderr)
        best = max((v for v in row if row[v]["coherent"]), key=lambda v: row[v]["calibrated_score"],
                   default="mean-diff")
        check = {}
        for variant in sorted({"mean-diff", best}):
            with raw_intensities(), ps.steer(model, styles[variant], intensity=row[variant]["high"]):
                generation = held_out.generate(model)
            measured = held_out.measure(model, generation, None)
            check[variant] = {k: measured[k] for k in ("score", "expressed", "coherence")}
            check[variant]["texts"] = measured["texts"][:3]
        results[name] = {"variants": row, "best_on_calibration_prompts": best, "held_out": check,
                         "prompts": args.prompts, "new_tokens": tokens, "grid": list(GRID)}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=1) + "\n")
    report()
    return 0


def report() -> None:
    """The comparison table between the markers of docs/evaluation.md."""
    results = json.loads(OUT.read_text())
    names = ("mean-diff", "generated-only", "multi-layer", "pca")
    lines = ["| concept | " + " | ".join(names) + " | best | held-out: mean-diff | held-out: best |",
             "|---|" + "---|" * (len(names) + 3)]

    def cell(v):
        mark = "" if v["coherent"] else " (incoherent)"
        return f"{v['calibrated_score']:.2f} @ {v['high']:g}{mark}"

    def held(v):
        return f"{v['score']:.2f} / {v['expressed']:.0%} / {v['coherence']:.0%}"

    for concept, r in results.items():
        best = r["best_on_calibration_prompts"]
        cells = " | ".join(cell(r["variants"][n]) for n in names if n in r["variants"])
        lines.append(f"| {concept} | {cells} | {best} | {held(r['held_out']['mean-diff'])} | "
                     f"{held(r['held_out'][best])} |")
    lines.append("")
    lines.append("Variant cells: judge score at the variant's calibrated intensity (@ raw intensity x the "
                 "style weight) on the calibration prompts. Held-out cells: score / rows expressed / rows "
                 "incoherent on the evaluation prompts, each variant at its own calibrated intensity.")
    doc_path = ROOT / "docs" / "evaluation.md"
    doc = doc_path.read_text()
    begin, end = "<!-- methods-table:begin -->", "<!-- methods-table:end -->"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc_path.write_text(f"{head}{begin}\n" + "\n".join(lines) + f"\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
