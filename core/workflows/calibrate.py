"""Calibration: sweep a style's intensity, measure concept score and coherence, store the range.

::

    cal = ps.calibrate(model, "cheerful")          # sweep, judge, choose; save=True writes it
    ps.calibration_for("cheerful", model)          # {"low": ..., "high": ..., "bound": ...} or None

The sweep is one loop over *cells* (:func:`calibration_cells`, :func:`run_cell`): the unsteered
baseline, then each raw intensity of the grid, each a pure function of
``(adapter, style, intensity, judge)`` that a launcher could fan out. A *judge* (a
:class:`CalibrationJudge`, registered per modality through ``polysteer_register_calibration_judges``)
says which held-out inputs to generate from and measures each generation against the baseline:

* ``score``: how much of the concept the outputs carry (higher is more), from a judge that shares
  nothing with the steering direction (text: a naive Bayes over held-out judge examples; image: the
  avatar attribute classifier; voice: a measured prosody target);
* ``coherence``: a cost that rises when the output breaks (text: the fraction of rows whose
  perplexity under the unsteered model exceeds human-written text on the concept or that repeat
  themselves; image: attributes the concept should not touch that changed; voice: Whisper WER);
* ``bound``: the most coherence cost allowed, from the baseline (:meth:`CalibrationJudge.bound`).

:func:`choose_range` then takes ``high`` = the strongest grid point before the first one past the
bound, and ``low`` = the weakest point at or below ``high`` whose score has risen by half of the
score's rise up to ``high``. See :mod:`polysteer.steering.calibration` for what the stored range
does at steer time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from polysteer.errors import ConfigError
from polysteer.io.paths import configs_dir
from polysteer.io.safeload import load_yaml
from polysteer.plugin.manager import current_plugin_manager
from polysteer.steering.calibration import Calibration, find_calibration, raw_intensities
from polysteer.steering.runtime import steer
from polysteer.steering.style import Style, load_style

GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
"""Default raw intensities swept (x the style's own weights)."""


class CalibrationJudge(Protocol):
    """What a modality supplies to calibrate a style (see the module docs)."""

    score_name: str
    coherence_name: str
    grid: Sequence[float]

    def generate(self, adapter: Any) -> Any:
        """Generate from the judge's held-out inputs (inside any active steering context)."""

    def measure(self, adapter: Any, generation: Any, baseline: Any | None) -> dict[str, Any]:
        """``{"score": float, "coherence": float, ...}`` for one generation (``baseline``: the
        unsteered one, ``None`` when measuring the baseline itself)."""

    def bound(self, baseline: dict[str, Any]) -> float:
        """The most coherence cost allowed, given the baseline's measures."""

    def describe(self) -> dict[str, Any]:
        """The judge's settings, recorded in the calibration."""


def judges_dir() -> Path:
    """The shipped judge specs: ``configs/judges/NAME.yaml``."""
    return configs_dir() / "judges"


def judge_spec(name: str) -> dict[str, Any]:
    """A judge spec by name (``configs/judges/NAME.yaml``) or path."""
    path = Path(name)
    if not path.is_file():
        path = judges_dir() / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in judges_dir().glob("*.yaml"))
        raise ConfigError(f"no judge spec {name!r}: write configs/judges/{name}.yaml or pass "
                          f"--judge with one of {', '.join(names)}")
    spec = load_yaml(path, "judge spec")
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a judge spec is a mapping with per-modality sections")
    spec.setdefault("name", path.stem)
    return spec


def judge_name(style: Style) -> str:
    """Which judge spec measures ``style``: its own name if ``configs/judges/<name>.yaml`` exists,
    else its one component's concept or feature label."""
    if (judges_dir() / f"{style.name}.yaml").is_file():
        return style.name
    labels = {c.concept or (c.feature if isinstance(c.feature, str) else None)
              for c in style.components}
    labels.discard(None)
    for label in sorted(labels):
        if (judges_dir() / f"{label}.yaml").is_file():
            return str(label)
    raise ConfigError(f"style {style.name!r} has no judge spec: pass judge=... (CLI: --judge NAME; "
                      "shipped specs are in configs/judges/)")


def make_judge(adapter: Any, style: Style, judge: str | dict | None = None,
               plugins: Any = None) -> CalibrationJudge:
    """The registered judge of ``adapter``'s modality for ``style`` (spec by name, path or dict)."""
    manager = plugins or current_plugin_manager()
    spec = judge if isinstance(judge, dict) else judge_spec(judge or judge_name(style))
    try:
        factory = manager.calibration_judges.get(adapter.modality)
    except Exception:  # noqa: BLE001 - RegistryError names what is registered
        raise ConfigError(f"no calibration judge for {adapter.modality} models; a plugin registers "
                          "one with polysteer_register_calibration_judges") from None
    if adapter.modality not in spec:
        raise ConfigError(f"judge spec {spec.get('name')!r} has no {adapter.modality!r} section; "
                          f"it has {sorted(k for k in spec if k in ('text', 'image', 'voice'))}")
    return factory(adapter, spec)


@dataclass
class Cell:
    """One point of the sweep: a raw intensity (0.0: the unsteered baseline)."""

    intensity: float


def calibration_cells(grid: Sequence[float]) -> list[Cell]:
    """The baseline then each grid intensity, in order."""
    return [Cell(0.0)] + [Cell(float(i)) for i in grid]


def run_cell(adapter: Any, style: Style, cell: Cell, judge: CalibrationJudge,
             baseline: tuple[Any, dict] | None) -> tuple[Any, dict[str, Any]]:
    """Generate and measure one cell (raw intensity, no calibration applied)."""
    with raw_intensities():
        if cell.intensity == 0.0:
            generation = judge.generate(adapter)
        else:
            with steer(adapter, style, intensity=cell.intensity):
                generation = judge.generate(adapter)
    measured = judge.measure(adapter, generation, None if baseline is None else baseline[0])
    return generation, {"intensity": cell.intensity, **measured}


def choose_range(points: list[dict[str, Any]], bound: float) -> tuple[float, float | None, bool]:
    """``(high, low, coherent)`` from measured points (the first is the baseline)."""
    base = points[0]
    high, coherent = None, True
    for p in points[1:]:
        p["coherent"] = bool(p["coherence"] <= bound + 1e-12)
    for p in points[1:]:
        if not p["coherent"]:
            break
        high = p["intensity"]
    if high is None:
        high, coherent = points[1]["intensity"], False
    top = next(p for p in points if p["intensity"] == high)
    rise = top["score"] - base["score"]
    low = None
    if rise > 1e-6:
        for p in points[1:]:
            if p["intensity"] <= high and p["score"] - base["score"] >= 0.5 * rise:
                low = p["intensity"]
                break
    return float(high), low, coherent


def calibrate(adapter: Any, style: Style | str, *, judge: str | dict | CalibrationJudge | None = None,
              grid: Sequence[float] | None = None, stop_after: int = 2, save: bool = False,
              plugins: Any = None, progress: bool = True) -> Calibration:
    """Sweep ``style`` on ``adapter``, measure, and return its :class:`Calibration`.

    Args:
        adapter: a loaded model.
        style: a style or its name / file.
        judge: a judge spec name (``configs/judges/``), a spec dict, or a judge object; default: the
            spec named like the style (see :func:`judge_name`).
        grid: raw intensities to sweep; default: the judge's grid, else :data:`GRID`.
        stop_after: stop the sweep after this many consecutive points past the bound (0: sweep all).
        save: also write it where steering finds it (``$POLYSTEER_HOME/calibrations/...``).
    """
    style = load_style(style) if isinstance(style, str | Path) else style
    if not hasattr(judge, "measure"):
        judge = make_judge(adapter, style, judge, plugins)
    grid = sorted(float(g) for g in (grid or getattr(judge, "grid", None) or GRID))
    if not grid or grid[0] <= 0:
        raise ConfigError(f"calibration grid {grid}: give positive intensities like 0.5 1 2")
    cells = calibration_cells(grid)
    points: list[dict[str, Any]] = []
    baseline = None
    bound = math.inf
    failures = 0
    started = time.time()
    from tqdm.auto import tqdm

    for cell in tqdm(cells, desc=f"calibrating {style.name}", unit="point", disable=not progress,
                     leave=False):
        generation, point = run_cell(adapter, style, cell, judge, baseline)
        if baseline is None:
            baseline = (generation, point)
            bound = float(judge.bound(point))
        points.append(point)
        if cell.intensity > 0:
            failures = failures + 1 if point["coherence"] > bound else 0
            if stop_after and failures >= stop_after:
                break
    high, low, coherent = choose_range(points, bound)
    calibration = Calibration(
        style=style.name, model=adapter.model_fingerprint, modality=adapter.modality, high=high,
        low=low, bound=bound, coherence=judge.coherence_name, score=judge.score_name,
        points=[_plain(p) for p in points], coherent=coherent,
        details={"judge": judge.describe(), "grid": list(grid), "seconds": round(time.time() - started, 1),
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if save:
        calibration.save()
    return calibration


def _plain(point: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly values (floats rounded, NaN as None)."""
    out = {}
    for k, v in point.items():
        if isinstance(v, float):
            out[k] = None if not math.isfinite(v) else round(v, 4)
        elif isinstance(v, bool | int | str) or v is None:
            out[k] = v
        elif isinstance(v, list | tuple):
            out[k] = [_plain({"x": x})["x"] for x in v]
        else:
            out[k] = str(v)
    return out


def calibration_for(style: Style | str, model: Any) -> dict[str, Any] | None:
    """The stored calibration of ``style`` for a loaded ``model`` as plain figures (``low``, ``high``,
    ``calibrated_low``, ``bound``, ``coherence``, ``score``, ``coherent``), or ``None``."""
    found = find_calibration(style if isinstance(style, Style) else str(style),
                             getattr(model, "model_fingerprint", model))
    return None if found is None else found.summary()


def plot_calibration(calibration: Calibration, path: str | Path) -> Path | None:
    """Concept score and coherence over raw intensity, the bound and the chosen range, as PNG."""
    from polysteer.io.plots import pyplot, save_png

    plt = pyplot()
    if plt is None:
        return None
    pts = calibration.points
    xs = [p["intensity"] for p in pts]
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    ax.plot(xs, [p["score"] for p in pts], marker="o", color="tab:blue", label=calibration.score)
    ax.set_xlabel(f"raw intensity of {calibration.style}")
    ax.set_ylabel(calibration.score, color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(xs, [p["coherence"] for p in pts], marker="s", color="tab:red", label=calibration.coherence)
    ax2.axhline(calibration.bound, color="tab:red", ls=":", lw=1)
    ax2.set_ylabel(f"{calibration.coherence} (bound dotted)", color="tab:red")
    ax.axvspan(calibration.low if calibration.low is not None else 0.0, calibration.high,
               color="tab:green", alpha=0.12)
    ax.axvline(calibration.high, color="tab:green", lw=1)
    ax.set_title(f"{calibration.style} on {calibration.model.short()}: calibrated 1.0 = {calibration.high:g}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)
