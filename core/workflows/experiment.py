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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from tqdm.auto import tqdm

from polysteer.config import Composition, check_values, node_to_dict
from polysteer.errors import ConfigError, PolysteerError
from polysteer.io.fileio import atomic_path, clean_dead_temps, share_permissions, temp_tag
from polysteer.io.plots import pyplot, save_png
from polysteer.models.device import current_model_defaults, model_defaults
from polysteer.models.loading import load_model
from polysteer.plugin.manager import PluginManager, current_plugin_manager
from polysteer.steering.style import Style, load_style
from polysteer.workflows.create import seeded_generate

T = TypeVar("T")


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


def _default_measures(exp: Any) -> Any:
    measures = node_to_dict(exp.measures)
    return ["changed_fraction"] if measures is None else measures


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
                   output_dir: Path | None = None, launcher: Any = None) -> Path:
    """Run the experiment in ``comp`` and return its run folder.

    The cells (one per model, prompt and seed: the unsteered generation and every style x
    intensity) run on ``launcher`` (default: the one the config's ``launcher`` node names, the
    serial one unless ``launcher=ray``); see :mod:`polysteer.workflows.launch`. Results are the
    same on every launcher.
    """
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
    from polysteer.workflows.launch import launcher_from_config

    own = launcher is None
    if own:
        launcher = launcher_from_config(node_to_dict(cfg.get("launcher")) if "launcher" in cfg else None)
    try:
        _run_into(folder, comp, plugins, models, styles, intensities, seeds, launcher)
        share_permissions(folder)
        return publish_run_folder(folder, parent, name)
    finally:
        if own:
            launcher.close()
        shutil.rmtree(folder, ignore_errors=True)


def _run_into(folder: Path, comp: Composition, plugins: PluginManager, models: list[_Model],
              styles: list[Style], intensities: list[float], seeds: list[int],
              launcher: Any = None) -> None:
    from polysteer.workflows.launch import SerialLauncher

    cfg, exp = comp.config, comp.config.experiment
    launcher = launcher or SerialLauncher()
    (folder / "outputs").mkdir()
    with atomic_path(folder / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg))

    per_cell = 1 + len(styles) * len(intensities)
    total = sum(len(_prompts(m, exp)) for m in models) * len(seeds) * per_cell
    rows: list[dict[str, Any]] = []
    sections: list[dict[str, Any]] = []
    remote = launcher.name != "serial"
    with tqdm(total=total, desc=f"{exp.name}", unit="generation") as bar:
        for model in models:
            prompts = _prompts(model, exp)
            job = _ModelJob(
                label=model.label, node=model.node, styles=styles, intensities=intensities,
                seeds=seeds, measures=model.measures if model.measures is not None
                else _default_measures(exp), options=_options_for_all(model, exp),
                base=(Path("outputs") / _slug(model.label) if len(models) > 1
                      else Path("outputs")).as_posix(),
                many_prompts=len(prompts) > 1, folder=None if remote else str(folder),
                plugins=None if remote else plugins, placement=current_model_defaults())
            cells = [(k, prompt, seed) for k, prompt in enumerate(prompts) for seed in seeds]
            bar.set_postfix_str(f"{model.label} on {launcher.name}")
            results: dict[int, dict[str, Any]] = {}
            for index, result in launcher.map(partial(_setup_model, job), _run_cell, cells):
                for rel, data in result.pop("files", {}).items():  # from a remote worker
                    target = folder / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(target) as tmp:
                        tmp.write_bytes(data)
                results[index] = result
                bar.update(per_cell)
            modality = next(iter(results.values()))["modality"] if results else "?"
            measures = next(iter(results.values()))["measures"] if results else []
            first = len(rows)
            for index in range(len(cells)):  # the serial order, whatever order cells finished in
                rows += results[index]["rows"]
            plot_name = "measures.png" if len(models) == 1 else f"measures-{_slug(model.label)}.png"
            plot = _plot(rows[first:], list(measures), folder / "plots" / plot_name, model.label)
            sections.append({"model": model.label, "modality": modality,
                             "measures": list(measures), "rows": rows[first:], "plot": plot,
                             "prompts": prompts,
                             "audits": _audits(folder, job, styles, intensities, exp, bar)})
    with atomic_path(folder / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _report(folder, comp, sections)


def _options_for_all(model: _Model, exp: Any) -> dict[str, Any]:
    """The generate options of every modality (the worker picks its model's)."""
    shared = node_to_dict(exp.generate) or {}
    return {"shared": shared, "model": dict(model.generate)}


@dataclass
class _ModelJob:
    """Everything a worker needs to run one model's cells (picklable for the Ray launcher)."""

    label: str
    node: Any
    styles: list[Style]
    intensities: list[float]
    seeds: list[int]
    measures: Any
    options: dict[str, Any]
    base: str
    many_prompts: bool
    folder: str | None
    """The run folder when the worker shares this process (serial); ``None``: return file bytes."""
    plugins: Any = None
    placement: tuple[str | None, str | None] = (None, None)
    """The caller's ``--device``/``--dtype`` defaults, carried to remote workers."""


@dataclass
class _ModelState:
    job: _ModelJob
    adapter: Any
    measures: dict[str, Any]
    options: dict[str, Any]


def _setup_model(job: _ModelJob) -> _ModelState:
    """Load the model once per worker (the launcher's ``setup``)."""
    plugins = job.plugins or current_plugin_manager()
    try:
        with model_defaults(*job.placement):
            adapter = load_model(job.node, plugins=plugins)
    except PolysteerError:
        raise
    except (OSError, ImportError, ValueError) as err:
        raise ConfigError(f"experiment model {job.label!r} is not installed or cannot be "
                          f"loaded ({type(err).__name__}: {err}); install it (see "
                          "'polysteer models') or remove it from experiment.models") from err
    chosen = job.measures
    if isinstance(chosen, Mapping):
        chosen = chosen.get(adapter.modality, [])
    names = [chosen] if isinstance(chosen, str) else [str(m) for m in chosen or []]
    measures = {name: plugins.measures.get(name) for name in names}
    shared = job.options["shared"]
    options = {k: v for k, v in shared.items() if not isinstance(v, Mapping)}
    own = shared.get(adapter.modality)
    options.update(own if isinstance(own, Mapping) else {})
    options.update(job.options["model"])
    options.pop("seed", None)
    return _ModelState(job, adapter, measures, options)


def _run_cell(state: _ModelState, cell: tuple[int, Any, int]) -> dict[str, Any]:
    """One prompt and seed of one model: the unsteered generation, then every style x intensity.

    Returns the metric rows (paths relative to the run folder) and, for a remote worker, the
    output files' bytes under ``files``.
    """
    k, prompt, seed = cell
    job, adapter, options = state.job, state.adapter, state.options
    scratch = None if job.folder is not None else Path(tempfile.mkdtemp(prefix="polysteer-cell-"))
    root = Path(job.folder) if job.folder is not None else scratch
    assert root is not None
    base = Path(job.base)
    try:
        inputs = adapter.prepare_inputs(prompt)
        tag = "".join([f"p{k}-" if job.many_prompts else "",
                       f"s{seed}-" if len(job.seeds) > 1 else ""])
        baseline, _ = seeded_generate(adapter, inputs, seed=seed, options=options)
        unsteered_files = [f.relative_to(root).as_posix() for f in adapter.save_outputs(
            baseline, root / base / f"{tag}unsteered")]
        unsteered_samples = adapter.describe_outputs(baseline)
        rows = []
        for style in job.styles:
            where = base / _slug(style.name) if len(job.styles) > 1 else base
            for intensity in job.intensities:
                generation, skipped = seeded_generate(adapter, inputs, seed=seed, style=style,
                                                      intensity=intensity, options=options)
                files = adapter.save_outputs(generation, root / where / f"{tag}intensity-{intensity:g}")
                rows.append({
                    "model": job.label, "modality": adapter.modality,
                    "style": style.name, "prompt": k, "seed": seed, "intensity": intensity,
                    **{name: _finite_or_none(m(generation, baseline))
                       for name, m in state.measures.items()},
                    "outputs": [f.relative_to(root).as_posix() for f in files],
                    "unsteered": unsteered_files,
                    "samples": adapter.describe_outputs(generation),
                    "unsteered_samples": unsteered_samples,
                    "not_applied": skipped})
        result: dict[str, Any] = {"rows": rows, "modality": adapter.modality,
                                  "measures": list(state.measures)}
        if scratch is not None:
            result["files"] = {p.relative_to(scratch).as_posix(): p.read_bytes()
                               for p in sorted(scratch.rglob("*")) if p.is_file()}
        return result
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _audits(folder: Path, job: _ModelJob, styles: list[Style], intensities: list[float],
            exp: Any, bar: Any) -> list[Any]:
    """``experiment.audit``: the side-effect audit (:func:`polysteer.audit`) of each style on this
    model at ``audit.intensity`` (default: the sweep's strongest), saved as JSON beside the report.
    It runs here, after the sweep's cells (on whatever launcher), with its own load of the model."""
    spec = node_to_dict(exp.audit) if OmegaConf.is_config(exp.audit) else exp.audit
    if not spec:
        return []
    from polysteer.workflows.audit import audit

    adapter = _setup_model(job).adapter

    spec = {} if spec is True else dict(spec)
    intensity = float(spec.pop("intensity", max(intensities, key=abs)))
    reports = []
    for style in styles:
        bar.set_postfix_str(f"{job.label} auditing {style.name}")
        report = audit(adapter, style, intensity, **spec)
        path = folder / f"audit-{_slug(job.label)}-{_slug(style.name)}.json"
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


def check_run_name(name: str) -> None:
    """Refuse a name that cannot name a run folder (check it before the work, not after)."""
    if not _SAFE_NAME.fullmatch(name):
        raise ConfigError(f"{name!r} cannot name a run folder; use letters, digits, '.', '_' and '-'")


def in_run_folder(parent: str | os.PathLike, name: str, work: Callable[[Path], T]) -> tuple[Path, T]:
    """Run ``work(tmp)`` in a temporary folder under ``parent`` and publish it as
    ``parent/<time>-<name>`` only when it returns (:func:`publish_run_folder`): a failed or killed
    run leaves no run folder, and what killed runs left is cleaned first. Returns ``(folder, the
    value of work)``; paths ``work`` recorded are relative to its folder, or refer to ``tmp``."""
    check_run_name(name)
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    clean_dead_temps(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.{temp_tag()}.", suffix=".tmp", dir=parent))
    try:
        value = work(tmp)
        share_permissions(tmp)
        return publish_run_folder(tmp, parent, name), value
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
