"""Draw the figures used in the docs (needs matplotlib: ``pip install 'polysteer[plots]'``).

    python docs/make_figures.py                 # writes docs/figures/forward-pass.png
    python docs/make_figures.py --out other.png # writes somewhere else

Each figure is written atomically: to a temporary file beside the target, then renamed over it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "figures" / "forward-pass.png"

# colours: who does the work in each box
PLUGIN = "#dbe9f6"  # the plugin's adapter / the model
CORE = "#fde9c9"  # the runtime's site hook (plain tensor code)
RULE = "#e3f1dc"  # rules
EDGE = "#4a4a4a"


TITLE_H = 0.036  # title band at the top of a box, in axes units
LINE_H = 0.0148  # one line of body text
PAD = 0.012


def _height(body: str) -> float:
    return TITLE_H + (len(body.splitlines()) * LINE_H + PAD if body else 0.0)


def _box(ax, x: float, top: float, w: float, title: str, body: str, colour: str,
         align: str = "center") -> float:
    """Draw a box whose top edge is at ``top``; return its bottom edge."""
    h = _height(body)
    ax.add_patch(FancyBboxPatch((x - w / 2, top - h), w, h,
                                boxstyle="round,pad=0.0,rounding_size=0.012",
                                facecolor=colour, edgecolor=EDGE, linewidth=1.2))
    ax.text(x, top - TITLE_H / 2, title, ha="center", va="center", fontsize=10.5,
            fontweight="bold")
    if body:
        bx = x if align == "center" else x - w / 2 + 0.04
        ax.text(bx, top - TITLE_H + 0.002, body, ha=align, va="top", fontsize=8.2,
                family="DejaVu Sans Mono", linespacing=1.3)
    return top - h


def _arrow(ax, points: list[tuple[float, float]]) -> None:
    """A straight arrow through ``points`` (the head at the last one)."""
    for a, b in zip(points[:-2], points[1:-1], strict=False):
        ax.plot([a[0], b[0]], [a[1], b[1]], color=EDGE, linewidth=1.3, solid_capstyle="round")
    ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=14,
                                 linewidth=1.3, color=EDGE, shrinkA=0, shrinkB=1))


def draw_forward_pass(out: Path) -> Path:
    """One forward pass through the steering runtime, as a box-and-arrow diagram."""
    fig, ax = plt.subplots(figsize=(9.6, 11.0))
    ax.set_xlim(-0.06, 1)
    ax.axis("off")
    ax.text(0.45, 0.995, "One forward pass under polysteer.steer(model, style, intensity)",
            ha="center", va="top", fontsize=12, fontweight="bold")

    x, w, gap = 0.45, 0.60, 0.024
    steps = [
        ("1. the adapter advances the StepClock",
         "advance_step(phase, offset, new, prompt_length, rows)\n"
         "-> Step(index, progress, phase, ..., rows: RowMap)\n"
         "rules: active = held steps remaining > 0", PLUGIN),
        ("2. the model runs; the site's module fires",
         "forward hook (output) or forward pre-hook (input)", PLUGIN),
        ("3. x = layout.read(native)",
         "tuple / (B, C, H, W) / (B, C, T)  ->  (B, P, C)", CORE),
        ("4. rule read-outs",
         "encode(x[:, -new:])[..., f].amax(positions) / scale\n"
         "> above for for_steps steps -> fire\n"
         "a rule fires in this step and acts from the next", RULE),
        ("5. for each component at this site",
         "w = intensity x weight x envelope(progress)\n"
         "    x gate (enabled, apply/stop rules)\n"
         "    x rows (branches, per-sample intensity)\n"
         "    x mask(step, positions, grid)\n"
         "(skipped when intensity x weight x envelope == 0)", CORE, "left"),
        ("6. y = intervention.apply(y, w)",
         "add / clamp / ablate / scale, or a plugin's kind", CORE),
        ("7. capture, if asked",
         "keep y[:, -new:] for Steering.captured(site)", CORE),
        ("8. layout.write(native, y)",
         "the native output, its activation replaced", CORE),
        ("9. the next module of the model", "", PLUGIN),
    ]
    top = 0.955
    edges = []
    for title, body, colour, *align in steps:
        bottom = _box(ax, x, top, w, title, body, colour, *align)
        edges.append((top, bottom))
        top = bottom - gap
    for (_, b0), (t1, _) in zip(edges, edges[1:], strict=False):
        _arrow(ax, [(x, b0), (x, t1)])

    # the inner loop over components: from box 6 back up to box 5 (left side)
    left = x - w / 2
    (t5, b5), (t6, b6) = edges[4], edges[5]
    _arrow(ax, [(left, (t6 + b6) / 2), (left - 0.05, (t6 + b6) / 2), (left - 0.05, (t5 + b5) / 2),
                (left, (t5 + b5) / 2)])
    ax.text(left - 0.058, (b5 + t6) / 2, "next\ncomponent", ha="right", va="center", fontsize=8.3,
            style="italic")

    # steps 3-8 run inside one site hook, once per steered or captured site
    (t3, _), (_, b8) = edges[2], edges[7]
    bracket = left - 0.165
    ax.plot([bracket + 0.015, bracket, bracket, bracket + 0.015], [t3, t3, b8, b8], color=EDGE,
            linewidth=1.2)
    ax.text(bracket - 0.012, (t3 + b8) / 2, "3-8: one site hook (runs at every steered or captured site)",
            rotation=90, ha="right", va="center", fontsize=8.6, style="italic")

    # the outer loop: after the forward pass, the next step starts at box 1 (right side)
    right = x + w / 2
    lane = right + 0.05
    (t1, b1), (t9, b9) = edges[0], edges[-1]
    _arrow(ax, [(right, (t9 + b9) / 2), (lane, (t9 + b9) / 2), (lane, (t1 + b1) / 2),
                (right, (t1 + b1) / 2)])
    ax.text(lane + 0.012, 0.5, "next forward pass (the next decode / denoise step)", rotation=90,
            ha="left", va="center", fontsize=8.6, style="italic")

    # legend and notes, right of the loop lane
    note_x = lane + 0.06
    for i, (colour, text) in enumerate([(PLUGIN, "plugin: adapter\nand model"),
                                        (CORE, "core site hook:\ntensor code only"),
                                        (RULE, "rules")]):
        y = 0.90 - i * 0.06
        ax.add_patch(FancyBboxPatch((note_x, y - 0.01), 0.03, 0.02, boxstyle="round,pad=0.002",
                                    facecolor=colour, edgecolor=EDGE))
        ax.text(note_x + 0.04, y, text, fontsize=8.2, va="center")
    ax.text(note_x, 0.70, "Done once, when\nthe context opens:\n- resolve dictionaries\n"
            "- check fingerprint,\n  site, channels\n- build intervention,\n  schedule and mask\n"
            "- install one hook\n  per site", fontsize=8.2, va="top", linespacing=1.4)
    ax.text(note_x, 0.38, "On exit (also after\nan exception): every\nhook removed, clock\ndetached.",
            fontsize=8.2, va="top", linespacing=1.4)

    ax.set_ylim(edges[-1][1] - 0.01, 1.0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", facecolor="white")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    print(draw_forward_pass(args.out))


if __name__ == "__main__":
    main()
