#!/usr/bin/env python
"""Issue 15 item 6: steering against prompting, per concept, on held-out prompts. One command:

    python scripts/evaluate_steering.py              # measure every concept, then write the report
    python scripts/evaluate_steering.py pirate       # measure only these (the report uses all measured)
    python scripts/evaluate_steering.py --report     # only the plot, the table and docs/evaluation.md

For each of the twelve text concepts of ``configs/judges/`` (held-out judge examples, never used to
build a direction) and the shipped style of the same name on SmolLM2, on the *evaluation* prompts of
``configs/evaluation/prompts.yaml`` (never used to calibrate or build), greedy, it generates:

* ``unsteered``: the prompt as is;
* ``prompt``: the prompt plus the concept's instruction (``text.instruction``: "Answer like a pirate.");
* ``steer 0.5`` and ``steer 1.0``: the style at calibrated intensities (the shipped calibration for
  SmolLM2 scales them: 1.0 = the strongest coherent setting measured on the calibration prompts);
* ``prompt+steer 0.5`` and ``prompt+steer 1.0``: both.

Each is measured as ``polysteer calibrate`` measures (the judge's P(concept) per row, the share of rows
with P > 0.5 = "expressed", and the share of incoherent rows); the coherence bound is the unsteered
share + 0.2, as in calibration. Outputs: ``docs/figures/evaluation/NAME.json`` (with every text),
``docs/figures/evaluation-pareto.png`` and the table in ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures" / "evaluation"
PLOT = ROOT / "docs" / "figures" / "evaluation-pareto.png"
DOC = ROOT / "docs" / "evaluation.md"
CONCEPTS = ("positive", "cheerful", "gloomy", "calm", "cool", "businesslike", "formal", "french",
            "pirate", "concise", "cautious", "golden-gate")
CONDITIONS = (("unsteered", False, 0.0), ("prompt", True, 0.0), ("steer 0.5", False, 0.5),
              ("steer 1.0", False, 1.0), ("prompt+steer 0.5", True, 0.5), ("prompt+steer 1.0", True, 1.0))
EXTRA_BROKEN = 0.2


def measure(name: str, model, prompts: list[str], wait: float = 0.0) -> dict:
    import polysteer as ps
    from polysteer.plugins.text.evaluation import TextCalibrationJudge
    from polysteer.workflows import judge_spec

    spec = judge_spec(name)
    style = ps.load_style(name)
    calibration = ps.calibration_for(style, model)
    deadline = time.time() + wait
    while calibration is None and time.time() < deadline:  # a calibration still being made
        time.sleep(10)
        calibration = ps.calibration_for(style, model)
    rows = {}
    for label, instructed, intensity in CONDITIONS:
        judge = TextCalibrationJudge(model, spec, prompts=prompts,
                                     instruction=spec["text"]["instruction"] if instructed else None)
        if intensity:
            with ps.steer(model, style, intensity=intensity):
                generation = judge.generate(model)
        else:
            generation = judge.generate(model)
        m = judge.measure(model, generation, None)
        rows[label] = {"intensity": intensity, "instruction": judge.instruction,
                       **{k: m[k] for k in ("score", "expressed", "coherence", "perplexity_ratio",
                                            "repetition")}, "texts": m["texts"]}
        print(f"{name} {label}: score {m['score']:.3f} expressed {m['expressed']:.2f} "
              f"incoherent {m['coherence']:.2f}", file=sys.stderr)
    bound = rows["unsteered"]["coherence"] + EXTRA_BROKEN
    return {"concept": name, "kind": spec.get("kind"), "calibration": calibration, "bound": bound,
            "prompts": prompts, "new_tokens": judge.new_tokens, "conditions": rows}


def verdicts(r: dict) -> dict:
    c, bound = r["conditions"], r["bound"]
    ok = {k: v["coherence"] <= bound + 1e-9 for k, v in c.items()}
    return {
        "steer_expresses_80": c["steer 1.0"]["expressed"] >= 0.8 and ok["steer 1.0"],
        "prompt_plus_steer_beats_prompt": any(
            c[k]["score"] > c["prompt"]["score"] and ok[k] and c[k]["coherence"] <= max(
                c["prompt"]["coherence"], bound) for k in ("prompt+steer 0.5", "prompt+steer 1.0")),
        "steer_beats_prompt": c["steer 1.0"]["score"] > c["prompt"]["score"] and ok["steer 1.0"],
        "coherent": ok}


def report(results: dict) -> None:
    from polysteer.io import pyplot, save_png

    names = [n for n in CONCEPTS if n in results]
    plt = pyplot()
    if plt is not None and names:
        cols = 4
        rows_n = (len(names) + cols - 1) // cols
        fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 2.8 * rows_n), squeeze=False)
        marks = {"unsteered": ("k", "o"), "prompt": ("tab:orange", "s"), "steer 0.5": ("tab:blue", "^"),
                 "steer 1.0": ("tab:blue", "v"), "prompt+steer 0.5": ("tab:green", "^"),
                 "prompt+steer 1.0": ("tab:green", "v")}
        for ax, name in zip(axes.flat, names, strict=False):
            c = results[name]["conditions"]
            for curve, keys, color in (("steering", ("unsteered", "steer 0.5", "steer 1.0"), "tab:blue"),
                                       ("prompt+steering", ("prompt", "prompt+steer 0.5", "prompt+steer 1.0"),
                                        "tab:green")):
                ax.plot([c[k]["coherence"] for k in keys], [c[k]["score"] for k in keys], color=color,
                        lw=1, alpha=0.6, label=curve)
            for k, (color, marker) in marks.items():
                ax.scatter(c[k]["coherence"], c[k]["score"], color=color, marker=marker, s=28, zorder=3)
            ax.axvline(results[name]["bound"], color="tab:red", ls=":", lw=1)
            ax.set(title=name, xlim=(-0.05, 1.05), ylim=(-0.02, 1.02))
            ax.grid(alpha=0.3)
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        axes[0][0].set_ylabel("judge P(concept)")
        axes[-1][0].set_xlabel("incoherent rows (bound dotted)")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("SmolLM2, held-out prompts: black unsteered, orange prompt, blue steering "
                     "(0.5, 1.0 calibrated), green prompt+steering", fontsize=9)
        fig.tight_layout()
        save_png(fig, PLOT)
    lines = ["| concept | kind | 1.0 = raw | unsteered | prompt | steer 1.0 | prompt+steer 1.0 | "
             "steer expresses >= 80% | prompt+steer beats prompt |", "|---|---|---|---|---|---|---|---|---|"]

    def cell(v):
        return f"{v['score']:.2f} / {v['expressed']:.0%} / {v['coherence']:.0%}"

    counts = {"steer_expresses_80": 0, "prompt_plus_steer_beats_prompt": 0, "steer_beats_prompt": 0}
    for name in names:
        r = results[name]
        v = verdicts(r)
        for k in counts:
            counts[k] += bool(v[k])
        cal = r["calibration"]
        high = f"{cal['high']:g}" if cal else "uncalibrated"
        c = r["conditions"]
        lines.append(f"| {name} | {r['kind']} | {high} | {cell(c['unsteered'])} | {cell(c['prompt'])} | "
                     f"{cell(c['steer 1.0'])} | {cell(c['prompt+steer 1.0'])} | "
                     f"{'yes' if v['steer_expresses_80'] else 'no'} | "
                     f"{'yes' if v['prompt_plus_steer_beats_prompt'] else 'no'} |")
    lines.append("")
    lines.append(f"Cells: judge score / rows expressed / rows incoherent. Over {len(names)} concepts: "
                 f"calibrated steering alone expresses the concept in >= 80% of prompts within the bound "
                 f"for {counts['steer_expresses_80']}; prompt + steering beats the prompt alone (higher "
                 f"score, within the bound) for {counts['prompt_plus_steer_beats_prompt']}; steering "
                 f"alone beats the prompt alone for {counts['steer_beats_prompt']}.")
    table = "\n".join(lines)
    (OUT / "summary.json").write_text(json.dumps({"counts": counts, "concepts": names}, indent=1) + "\n")
    begin, end = "<!-- evaluation-table:begin -->", "<!-- evaluation-table:end -->"
    doc = DOC.read_text() if DOC.exists() else f"# Evaluation\n\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{begin}\n{table}\n{end}{tail}")
    print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("concepts", nargs="*")
    parser.add_argument("--report", action="store_true", help="only write the report from measured JSON")
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait for a style's calibration to appear")
    parser.add_argument("--prompts", type=int, default=8, help="evaluation prompts used (of 10)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.report:
        import polysteer as ps
        from polysteer.plugins.text.evaluation import evaluation_prompts

        model = ps.load_model("smollm2")
        prompts = evaluation_prompts("evaluate")[:args.prompts]
        for name in args.concepts or CONCEPTS:
            measured = measure(name, model, prompts, args.wait)
            (OUT / f"{name}.json").write_text(json.dumps(measured, indent=1) + "\n")
    results = {p.stem: json.loads(p.read_text()) for p in OUT.glob("*.json") if p.stem != "summary"}
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
