"""``polysteer run``: sweep intensities of a style on a model, measure, and write a run folder.

The folder holds the fully composed ``config.yaml``, outputs per intensity, ``metrics.jsonl``, a
plot of every measure against intensity (when matplotlib is installed) and ``report.html``.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from polysteer.config import Composition, check_values, node_to_dict
from polysteer.errors import ConfigError
from polysteer.io.fileio import atomic_path, clean_dead_temps, share_permissions, temp_tag
from polysteer.io.plots import pyplot, save_png
from polysteer.models.loading import load_model
from polysteer.plugin.manager import PluginManager, current_plugin_manager
from polysteer.steering.runtime import steer
from polysteer.steering.style import Style


def run_experiment(comp: Composition, *, plugins: PluginManager | None = None,
                   output_dir: Path | None = None) -> Path:
    """Run the experiment in ``comp`` and return its run folder."""
    plugins = plugins or current_plugin_manager()
    cfg = comp.config
    exp = cfg.experiment
    measures = {name: plugins.measures.get(name) for name in exp.measures}
    style_data = node_to_dict(cfg.style)
    if not style_data:
        raise ConfigError("style: a run needs a style; choose one with style=NAME "
                          "(files in configs/style/) or set style.components")
    style = Style.from_dict(style_data, base_dir=comp.base_dir("style"))
    check_values(cfg)  # finite numbers, intensities in range (compose checked; callers may edit)
    intensities = [float(i) for i in exp.intensities]
    name = str(exp.name)
    if not _SAFE_NAME.fullmatch(name):
        raise ConfigError(f"experiment.name: {name!r} cannot name a run folder; use letters, "
                          "digits, '.', '_' and '-'")
    torch.manual_seed(cfg.seed)
    adapter = load_model(node_to_dict(cfg.model), plugins=plugins)
    inputs = adapter.prepare_inputs(node_to_dict(exp.inputs))
    options = node_to_dict(exp.generate) or {}
    with steer(adapter, style, intensity=max(intensities, key=abs), plugins=plugins):
        pass  # resolves every dictionary, feature, schedule and rule before anything is written

    parent = Path(output_dir or cfg.output_dir)
    parent.mkdir(parents=True, exist_ok=True)
    clean_dead_temps(parent)  # what runs killed earlier left
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.{temp_tag()}.", suffix=".tmp", dir=parent))
    try:
        _run_into(folder, comp, adapter, style, inputs, options, intensities, measures)
        share_permissions(folder)
        return publish_run_folder(folder, parent, name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_into(folder: Path, comp: Composition, adapter: Any, style: Style, inputs: Any,
              options: dict, intensities: list[float], measures: dict) -> None:
    cfg, exp = comp.config, comp.config.experiment
    (folder / "outputs").mkdir()
    with atomic_path(folder / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg))

    torch.manual_seed(cfg.seed)
    baseline = adapter.generate(inputs, **options)
    adapter.save_outputs(baseline, folder / "outputs" / "unsteered")
    rows = []
    for intensity in tqdm(intensities, desc=f"{exp.name}: intensities", unit="run"):
        torch.manual_seed(cfg.seed)
        generation = adapter.generate(inputs, style=style, intensity=intensity, **options)
        files = adapter.save_outputs(generation, folder / "outputs" / f"intensity-{intensity:g}")
        row = {"intensity": intensity,
               **{name: _finite_or_none(m(generation, baseline)) for name, m in measures.items()},
               "outputs": [str(f.relative_to(folder)) for f in files],
               "samples": adapter.describe_outputs(generation)}
        rows.append(row)
    with atomic_path(folder / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot = _plot(rows, list(measures), folder / "plots" / "measures.png")
    _report(folder, comp, rows, list(measures), plot, adapter.describe_outputs(baseline))


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def publish_run_folder(tmp: Path, parent: Path, name: str) -> Path:
    """Rename the finished run ``tmp`` to ``parent/<time>-<name>`` (a suffix if that is taken):
    a run folder exists only once its run finished, so a failed or killed run leaves none."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = parent / (f"{stamp}-{name}" + (f"-{n}" if n else ""))
        if os.path.lexists(folder):
            continue
        try:
            os.rename(tmp, folder)  # an empty folder created meanwhile is replaced: fine
            return folder
        except OSError:
            continue
    raise FileExistsError(f"could not create a new run folder in {parent}")


def _finite_or_none(value: Any) -> float | None:
    """A measure's value for strict JSON: NaN/inf (e.g. pitch of silence) become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def new_run_folder(parent: Path, name: str) -> Path:
    """``parent/<time>-<name>``, with a suffix if two runs start within the same second."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = parent / (f"{stamp}-{name}" + (f"-{n}" if n else ""))
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a new run folder in {parent}")


def _plot(rows: list[dict], measures: list[str], path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [r["intensity"] for r in rows]
    for name in measures:
        ax.plot(xs, [float("nan") if r[name] is None else r[name] for r in rows], marker="o",
                label=name)
    ax.set_xlabel("intensity")
    ax.set_ylabel("measure")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def _report(folder: Path, comp: Composition, rows: list[dict], measures: list[str],
            plot: Path | None, baseline: list[str]) -> None:
    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else "n/a" if v is None else str(v)
        return f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["intensity", *measures, "first sample"])
    body = "".join("<tr>" + cell(r["intensity"]) + "".join(cell(r[m]) for m in measures)
                   + cell(r["samples"][0] if r["samples"] else "") + "</tr>" for r in rows)
    img = f'<img src="{plot.relative_to(folder)}" alt="measures">' if plot else \
        "<p>(install matplotlib for plots)</p>"
    page = f"""<!doctype html><meta charset="utf-8"><title>polysteer run</title>
<h1>{html.escape(comp.config.experiment.name)}</h1>
<p>Composed from: {html.escape(' → '.join(comp.sources))}</p>
<h2>Measures</h2><table border="1" cellpadding="4"><tr>{head}</tr>{body}</table>{img}
<h2>Unsteered</h2><pre>{html.escape(baseline[0] if baseline else '')}</pre>
<h2>Config</h2><pre>{html.escape(OmegaConf.to_yaml(comp.config))}</pre>
"""
    with atomic_path(folder / "report.html") as tmp:
        tmp.write_text(page)
