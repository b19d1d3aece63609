"""``polysteer run``: sweep styles x intensities x prompts x seeds x models, measure, report.

Models may be of any modality (text, image, voice...). The folder holds the fully composed
``config.yaml``, every output (as each adapter's ``save_outputs`` writes it: text, PNG, WAV),
``metrics.jsonl`` (one row per model, prompt, seed, style and intensity), a plot per model of every
measure against intensity (when matplotlib is installed) and one ``report.html``. Every generation
is seeded (torch's generator and the adapter's own ``seed`` argument where it takes one), so a rerun
of the same config gives the same outputs and metrics.
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm.auto import tqdm

from polysteer.config import Composition, check_values, node_to_dict
from polysteer.errors import ConfigError, PolysteerError
from polysteer.io.fileio import atomic_path, clean_dead_temps, share_permissions, temp_tag
from polysteer.io.plots import pyplot, save_png
from polysteer.models.loading import load_model
from polysteer.plugin.manager import PluginManager, current_plugin_manager
from polysteer.steering.style import Style, load_style
from polysteer.workflows.create import seeded_generate


@dataclass
class _Model:
    """One model of the sweep: its label, config node and per-model settings."""

    label: str
    node: Any
    generate: dict[str, Any] = field(default_factory=dict)
    measures: Any = None
    prompts: Any = None


def _models(comp: Composition) -> list[_Model]:
    exp = comp.config.experiment
    entries = node_to_dict(exp.models) or []
    if not entries:
        node = node_to_dict(comp.config.model)
        return [_Model(comp.choices.get("model") or node.get("name") or node.get("kind"), node)]
    models = []
    for i, entry in enumerate(entries):
        where = f"experiment.models[{i}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a model name, a model node {{kind: ...}} or "
                              f"{{model: ..., generate: ..., measures: ...}}, got {entry!r}")
        if "kind" in entry:
            entry = {"model": dict(entry)}
        allowed = ("model", "name", "generate", "measures", "prompts")
        for key in entry:
            if key not in allowed:
                raise ConfigError(f"{where}.{key}: unknown key; allowed: {', '.join(allowed)}")
        if "model" not in entry:
            raise ConfigError(f"{where}.model: missing (a model name such as smollm2, or a node)")
        model = entry["model"]
        if isinstance(model, str):
            path = comp.root / "model" / f"{model}.yaml"
            node: Any = dict(OmegaConf.to_container(OmegaConf.load(path))) if path.exists() else model
        else:
            node = dict(model)
        label = entry.get("name") or (model if isinstance(model, str) else
                                      str(model.get("name") or model.get("kind")))
        models.append(_Model(str(label), node, dict(entry.get("generate") or {}),
                             entry.get("measures"), entry.get("prompts")))
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"experiment.models: two models are called the same ({labels}); give "
                          "each a distinct name: {model: ..., name: ...}")
    return models


def _styles(comp: Composition) -> list[Style]:
    cfg = comp.config
    entries = node_to_dict(cfg.experiment.styles) or []
    if not entries:
        data = node_to_dict(cfg.style)
        if not data:
            raise ConfigError("style: a run needs a style; choose one with style=NAME (files in "
                              "configs/style/), set style.components, or list experiment.styles")
        return [Style.from_dict(data, base_dir=comp.base_dir("style"))]
    styles = []
    for i, entry in enumerate(entries):
        if isinstance(entry, Mapping):
            styles.append(Style.from_dict(dict(entry), base_dir=comp.base_dir("style")))
        elif isinstance(entry, str):
            local = comp.root / "style" / f"{entry}.yaml"
            styles.append(Style.load(local) if local.exists() else load_style(entry))
        else:
            raise ConfigError(f"experiment.styles[{i}]: expected a style name, file or mapping, "
                              f"got {entry!r}")
    names = [s.name for s in styles]
    if len(set(names)) != len(names):
        raise ConfigError(f"experiment.styles: two styles are called the same ({names}); give each "
                          "its own name")
    return styles


def _measures_for(model: _Model, modality: str, exp: Any) -> list[str]:
    chosen = model.measures if model.measures is not None else _default_measures(exp)
    if isinstance(chosen, Mapping):
        chosen = chosen.get(modality, [])
    if isinstance(chosen, str):
        chosen = [chosen]
    return [str(m) for m in chosen or []]


def _default_measures(exp: Any) -> Any:
    measures = node_to_dict(exp.measures)
    return ["changed_fraction"] if measures is None else measures


def _options_for(model: _Model, modality: str, exp: Any) -> dict[str, Any]:
    shared = node_to_dict(exp.generate) or {}
    options = {k: v for k, v in shared.items() if not isinstance(v, Mapping)}
    options.update(shared.get(modality) or {} if isinstance(shared.get(modality), Mapping) else {})
    options.update(model.generate)
    return options


def _prompts(model: _Model, exp: Any) -> list[Any]:
    """Each prompt is one input spec for ``prepare_inputs``; a string becomes a batch of one."""
    prompts = model.prompts if model.prompts is not None else node_to_dict(exp.prompts)
    if prompts is None:
        return [node_to_dict(exp.inputs)]  # the whole ``inputs`` batch as one prompt
    if not isinstance(prompts, list) or not prompts:
        raise ConfigError(f"experiment.prompts: expected a non-empty list, got {prompts!r}")
    return [[p] if isinstance(p, str) else p for p in prompts]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text)).strip("-") or "x"


def run_experiment(comp: Composition, *, plugins: PluginManager | None = None,
                   output_dir: Path | None = None) -> Path:
    """Run the experiment in ``comp`` and return its run folder."""
    plugins = plugins or current_plugin_manager()
    cfg = comp.config
    exp = cfg.experiment
    styles = _styles(comp)
    models = _models(comp)
    intensities = [float(i) for i in exp.intensities]
    explicit_seed = (node_to_dict(exp.generate) or {}).get("seed")
    seeds = [int(s) for s in exp.seeds] or [int(cfg.seed if explicit_seed is None else explicit_seed)]
    for model in models:  # every measure must exist before anything runs
        for modality_measures in ([model.measures] if model.measures is not None else [
                _default_measures(exp)]):
            names = (modality_measures.values() if isinstance(modality_measures, Mapping)
                     else [modality_measures])
            for group in names:
                for measure in [group] if isinstance(group, str) else group or []:
                    plugins.measures.get(measure)
    check_values(cfg)  # finite numbers, intensities in range (compose checked; callers may edit)
    name = str(exp.name)
    if not _SAFE_NAME.fullmatch(name):
        raise ConfigError(f"experiment.name: {name!r} cannot name a run folder; use letters, "
                          "digits, '.', '_' and '-'")

    parent = Path(output_dir or cfg.output_dir)
    parent.mkdir(parents=True, exist_ok=True)
    clean_dead_temps(parent)  # what runs killed earlier left
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.{temp_tag()}.", suffix=".tmp", dir=parent))
    try:
        _run_into(folder, comp, plugins, models, styles, intensities, seeds)
        share_permissions(folder)
        return publish_run_folder(folder, parent, name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_into(folder: Path, comp: Composition, plugins: PluginManager, models: list[_Model],
              styles: list[Style], intensities: list[float], seeds: list[int]) -> None:
    cfg, exp = comp.config, comp.config.experiment
    (folder / "outputs").mkdir()
    with atomic_path(folder / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg))

    total = sum(len(_prompts(m, exp)) for m in models) * len(seeds) * (1 + len(styles) * len(intensities))
    rows: list[dict[str, Any]] = []
    sections: list[dict[str, Any]] = []
    with tqdm(total=total, desc=f"{exp.name}", unit="generation") as bar:
        for model in models:
            bar.set_postfix_str(f"loading {model.label}")
            try:
                adapter = load_model(model.node, plugins=plugins)
            except PolysteerError:
                raise
            except (OSError, ImportError, ValueError) as err:
                raise ConfigError(f"experiment model {model.label!r} is not installed or cannot be "
                                  f"loaded ({type(err).__name__}: {err}); install it (see "
                                  "'polysteer models') or remove it from experiment.models") from err
            measures = {name: plugins.measures.get(name)
                        for name in _measures_for(model, adapter.modality, exp)}
            options = _options_for(model, adapter.modality, exp)
            options.pop("seed", None)
            prompts = _prompts(model, exp)
            base = Path("outputs") / _slug(model.label) if len(models) > 1 else Path("outputs")
            first = len(rows)
            for k, prompt in enumerate(prompts):
                inputs = adapter.prepare_inputs(prompt)
                for seed in seeds:
                    tag = "".join([f"p{k}-" if len(prompts) > 1 else "",
                                   f"s{seed}-" if len(seeds) > 1 else ""])
                    bar.set_postfix_str(f"{model.label} prompt {k} seed {seed} unsteered")
                    baseline, _ = seeded_generate(adapter, inputs, seed=seed, options=options)
                    unsteered_files = [f.relative_to(folder).as_posix() for f in adapter.save_outputs(
                        baseline, folder / base / f"{tag}unsteered")]
                    unsteered_samples = adapter.describe_outputs(baseline)
                    bar.update(1)
                    for style in styles:
                        where = base / _slug(style.name) if len(styles) > 1 else base
                        for intensity in intensities:
                            bar.set_postfix_str(f"{model.label} {style.name} x {intensity:g}")
                            generation, skipped = seeded_generate(
                                adapter, inputs, seed=seed, style=style, intensity=intensity,
                                options=options)
                            files = adapter.save_outputs(generation, folder / where
                                                         / f"{tag}intensity-{intensity:g}")
                            rows.append({
                                "model": model.label, "modality": adapter.modality,
                                "style": style.name, "prompt": k, "seed": seed,
                                "intensity": intensity,
                                **{name: _finite_or_none(m(generation, baseline))
                                   for name, m in measures.items()},
                                "outputs": [f.relative_to(folder).as_posix() for f in files],
                                "unsteered": unsteered_files,
                                "samples": adapter.describe_outputs(generation),
                                "unsteered_samples": unsteered_samples,
                                "not_applied": skipped})
                            bar.update(1)
            plot_name = "measures.png" if len(models) == 1 else f"measures-{_slug(model.label)}.png"
            plot = _plot(rows[first:], list(measures), folder / "plots" / plot_name, model.label)
            sections.append({"model": model.label, "modality": adapter.modality,
                             "measures": list(measures), "rows": rows[first:], "plot": plot,
                             "prompts": prompts,
                             "audits": _audits(folder, adapter, model, styles, intensities, exp, bar)})
            del adapter
    with atomic_path(folder / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _report(folder, comp, sections)


def _audits(folder: Path, adapter: Any, model: _Model, styles: list[Style], intensities: list[float],
            exp: Any, bar: Any) -> list[Any]:
    """``experiment.audit``: the side-effect audit (:func:`polysteer.audit`) of each style on this
    model at ``audit.intensity`` (default: the sweep's strongest), saved as JSON beside the report."""
    spec = node_to_dict(exp.audit) if OmegaConf.is_config(exp.audit) else exp.audit
    if not spec:
        return []
    from polysteer.workflows.audit import audit

    spec = {} if spec is True else dict(spec)
    intensity = float(spec.pop("intensity", max(intensities, key=abs)))
    reports = []
    for style in styles:
        bar.set_postfix_str(f"{model.label} auditing {style.name}")
        report = audit(adapter, style, intensity, **spec)
        path = folder / f"audit-{_slug(model.label)}-{_slug(style.name)}.json"
        with atomic_path(path) as tmp:
            tmp.write_text(report.to_json())
        reports.append(report)
    return reports


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


def _mean_by(rows: list[dict], measure: str) -> dict[tuple[str, float], float | None]:
    """``(style, intensity) -> mean of measure`` over prompts and seeds (``None`` values left out)."""
    groups: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        groups.setdefault((r["style"], r["intensity"]), [])
        if r.get(measure) is not None:
            groups[(r["style"], r["intensity"])].append(r[measure])
    return {key: (sum(v) / len(v) if v else None) for key, v in groups.items()}


def _plot(rows: list[dict], measures: list[str], path: Path, title: str = "") -> Path | None:
    """One panel per measure against intensity, a line per style (mean over prompts and seeds)."""
    plt = pyplot()
    if plt is None or not measures or not rows:
        return None
    styles = list(dict.fromkeys(r["style"] for r in rows))
    n = len(measures)
    cols = min(n, 3)
    lines = (n + cols - 1) // cols
    fig, axes = plt.subplots(lines, cols, figsize=(4.2 * cols, 3.1 * lines), squeeze=False)
    for ax, name in zip(axes.flat, measures, strict=False):
        means = _mean_by(rows, name)
        for style in styles:
            xs = sorted({i for s, i in means if s == style})
            ys = [float("nan") if means[(style, x)] is None else means[(style, x)] for x in xs]
            ax.plot(xs, ys, marker="o", label=style)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("intensity")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def _render_file(folder: Path, path: str) -> str:
    """An output file as HTML by its suffix: text inline, images shown, audio with a player."""
    suffix = Path(path).suffix.lower()
    name = html.escape(path)
    if suffix == ".txt":
        text = (folder / path).read_text()
        return f"<pre>{html.escape(text[:600] + ('...' if len(text) > 600 else ''))}</pre>"
    if suffix == ".png":
        return f'<img src="{name}" alt="{name}" style="width:128px;image-rendering:pixelated">'
    if suffix == ".wav":
        return f'<audio controls preload="none" src="{name}"></audio>'
    return f'<a href="{name}">{html.escape(Path(path).name)}</a>'


def _report(folder: Path, comp: Composition, sections: list[dict[str, Any]]) -> None:
    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else "n/a" if v is None else str(v)
        return f"<td>{html.escape(text)}</td>"

    parts = []
    for sec in sections:
        measures, rows = sec["measures"], sec["rows"]
        means = {m: _mean_by(rows, m) for m in measures}
        keys = list(dict.fromkeys((r["style"], r["intensity"]) for r in rows))
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["style", "intensity", *measures])
        body = "".join("<tr>" + cell(s) + cell(i) + "".join(cell(means[m][(s, i)]) for m in measures)
                       + "</tr>" for s, i in keys)
        plot = sec["plot"]
        img = f'<img src="{plot.relative_to(folder).as_posix()}" alt="measures">' if plot else \
            "<p>(install matplotlib for plots)</p>"
        # outputs: for the first seed, one row per prompt and style, unsteered then each intensity
        first_seed = rows[0]["seed"] if rows else None
        grid = []
        for r0 in [r for r in rows if r["seed"] == first_seed]:
            if r0["intensity"] != rows[0]["intensity"]:
                continue
            same = [r for r in rows if (r["prompt"], r["seed"], r["style"]) ==
                    (r0["prompt"], r0["seed"], r0["style"])]
            cells = "".join(f"<td>{''.join(_render_file(folder, f) for f in r['outputs'])}</td>"
                            for r in same)
            unsteered = "".join(_render_file(folder, f) for f in r0["unsteered"])
            grid.append(f"<tr><td>prompt {r0['prompt']}<br>{html.escape(r0['style'])}</td>"
                        f"<td>{unsteered}</td>{cells}</tr>")
        ints = list(dict.fromkeys(r["intensity"] for r in rows))
        grid_head = "".join(f"<th>{i:g}</th>" for i in ints)
        skipped = sorted({s for r in rows for s in r.get("not_applied", [])})
        note = ("<p>Not applied to this model: " + html.escape("; ".join(skipped)) + "</p>"
                if skipped else "")
        parts.append(f"""<h2>{html.escape(sec['model'])} <small>({html.escape(sec['modality'])})</small></h2>
{note}<h3>Measures (mean over prompts and seeds)</h3>
<table border="1" cellpadding="4"><tr>{head}</tr>{body}</table>{img}
<h3>Outputs (seed {first_seed})</h3>
<table border="1" cellpadding="4"><tr><th></th><th>unsteered</th>{grid_head}</tr>{''.join(grid)}</table>
{''.join(a.html_section() for a in sec.get("audits", []))}""")
    page = f"""<!doctype html><meta charset="utf-8"><title>polysteer run</title>
<h1>{html.escape(comp.config.experiment.name)}</h1>
<p>Composed from: {html.escape(' → '.join(comp.sources))}</p>
{''.join(parts)}
<h2>Config</h2><pre>{html.escape(OmegaConf.to_yaml(comp.config))}</pre>
"""
    with atomic_path(folder / "report.html") as tmp:
        tmp.write_text(page)
