"""The side-effect audit: what a style changes besides what it is about, on neutral probes.

:func:`audit` runs a model on the shipped neutral probes of its modality
(``configs/probes/<modality>.yaml``; or the probes you give) once unsteered and once under the
style, and reports:

* **features**: the features of a dictionary at some site (by default a sparse autoencoder shipped
  for this model: ``smollm2-res-sae``, ``avatars-up.1-sae``, ``joe-decoder-sae``) whose mean
  activity over the probes moved most, with their labels;
* **KL per position** (models with a next-token distribution, i.e. text): the KL divergence
  ``KL(steered || unsteered)`` of the next-token distribution at each generated position, with the
  unsteered continuation teacher-forced through both, so every position compares like with like;
* **measures**: for the other modalities, the registered effect measures of the modality (image:
  the avatar attribute classifier's probabilities and image statistics; voice: pitch, centroid,
  level, flatness and speaking rate), plus any registered generation measures asked for (e.g.
  ``voice_wer``), unsteered vs steered per probe; the measures a style is *about* (their name shares
  a word with the style's) are marked as targets, the rest are side effects.

The modality parts come from the adapter (:meth:`~polysteer.ModelAdapter.replay` for the
teacher-forced next-token logits) and the plugin registries (effect measures, measures); the
workflow exists once, here. :class:`AuditReport` prints as a table, serialises to JSON and
renders an HTML page with plots; ``polysteer audit`` is the command.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from polysteer.errors import PolysteerError
from polysteer.features.classifier import OUTLIER_FACTOR
from polysteer.features.dictionary import FeatureDictionary, resolve_dictionary
from polysteer.io.fileio import atomic_path
from polysteer.io.plots import pyplot
from polysteer.plugin.manager import PluginManager, current_plugin_manager
from polysteer.steering.governor import neutral_probes, probe_inputs
from polysteer.steering.runtime import steer
from polysteer.steering.style import Style, load_style


@dataclass
class FeatureMove:
    """One feature's mean activity over the probes, unsteered and steered."""

    feature: int
    label: str
    unsteered: float
    steered: float

    @property
    def change(self) -> float:
        """Steered minus unsteered."""
        return self.steered - self.unsteered


@dataclass
class MeasureMove:
    """One measure over the probes: means, the mean paired change and its standard error."""

    name: str
    unsteered: float
    steered: float
    change: float
    standard_error: float
    units: int
    target: bool = False

    @property
    def z(self) -> float:
        """The change in standard errors (how clearly it moved)."""
        if not math.isfinite(self.standard_error) or self.standard_error == 0:
            return math.inf if self.change else 0.0
        return self.change / self.standard_error


@dataclass
class AuditReport:
    """What :func:`audit` found; ``str(report)`` / :meth:`table` is the readable form."""

    style: str
    model: str
    modality: str
    intensity: float
    probes: int
    dictionary: str | None = None
    site: str | None = None
    features: list[FeatureMove] = field(default_factory=list)
    kl: list[float] | None = None  # mean over probes, per generated position (nats)
    kl_per_probe: list[list[float]] | None = None
    measures: list[MeasureMove] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def mean_kl(self) -> float | None:
        """Mean KL over every position of every probe (None without a next-token distribution)."""
        if self.kl_per_probe is None:
            return None
        values = [v for row in self.kl_per_probe for v in row]
        return sum(values) / len(values) if values else math.nan

    def side_effects(self) -> list[MeasureMove]:
        """The measures the style is not about, most moved (in standard errors) first."""
        return sorted((m for m in self.measures if not m.target), key=lambda m: -abs(m.z))

    # -- output ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (for ``--json``)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("features", "measures")}
        out["features"] = [{**asdict(f), "change": f.change} for f in self.features]
        out["measures"] = [{**asdict(m), "z": _finite(m.z)} for m in self.measures]
        out["mean_kl"] = self.mean_kl
        return _clean(out)

    def table(self) -> str:
        """A readable, aligned table for the terminal."""
        lines = [f"audit of {self.style!r} at intensity {self.intensity:g} on {self.model} "
                 f"({self.modality}), {self.probes} neutral probes"]
        if self.features:
            lines.append(f"\nfeatures of {self.dictionary} at {self.site} that moved most "
                         "(mean activity over the probes):")
            lines.append(f"  {'feature':>7}  {'unsteered':>9}  {'steered':>9}  {'change':>9}  label")
            for f in self.features:
                lines.append(f"  {f.feature:>7}  {f.unsteered:>9.4f}  {f.steered:>9.4f}  "
                             f"{f.change:>+9.4f}  {f.label}")
        if self.kl is not None:
            shown = " ".join(f"{v:.3f}" for v in self.kl[:24])
            more = " ..." if len(self.kl) > 24 else ""
            lines.append(f"\nKL(steered || unsteered) of the next-token distribution, nats, mean "
                         f"over probes: {self.mean_kl:.4f}")
            lines.append(f"  per generated position: {shown}{more}")
        if self.measures:
            lines.append("\nmeasures (mean over probes; target = what the style is about):")
            lines.append(f"  {'measure':<28} {'unsteered':>10} {'steered':>10} {'change':>10} "
                         f"{'z':>7}  ")
            for m in sorted(self.measures, key=lambda m: (not m.target, -abs(m.z))):
                lines.append(f"  {m.name:<28} {m.unsteered:>10.4f} {m.steered:>10.4f} "
                             f"{m.change:>+10.4f} {_z(m.z):>7}  {'target' if m.target else ''}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)

    __str__ = table

    def figure_png(self) -> bytes | None:
        """A PNG of the audit's plots (feature changes; KL per position or measure changes), or
        None without matplotlib."""
        plt = pyplot()
        if plt is None:
            return None
        panels = [p for p in ("features", "kl", "measures")
                  if (p == "features" and self.features) or (p == "kl" and self.kl)
                  or (p == "measures" and self.measures)]
        if not panels:
            return None
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
        for ax, panel in zip(axes[0], panels, strict=True):
            if panel == "features":
                names = [f"{f.feature} {f.label[:18]}" for f in self.features][::-1]
                ax.barh(names, [f.change for f in self.features][::-1], color="tab:purple")
                ax.set_title(f"feature activity change ({self.site})", fontsize=9)
                ax.tick_params(axis="y", labelsize=7)
            elif panel == "kl":
                for row in self.kl_per_probe or []:
                    ax.plot(row, color="0.8", linewidth=0.8)
                ax.plot(self.kl, color="tab:red", linewidth=2, label="mean over probes")
                ax.set_xlabel("generated position")
                ax.set_ylabel("KL (nats)")
                ax.set_title("next-token KL from the unsteered model", fontsize=9)
                ax.legend(fontsize=7)
            else:
                ms = sorted(self.measures, key=lambda m: abs(m.z))
                ax.barh([m.name for m in ms], [_finite(m.z) or 0.0 for m in ms],
                        color=["tab:green" if m.target else "tab:orange" for m in ms])
                ax.set_title("measure change, in standard errors (green: target)", fontsize=9)
                ax.tick_params(axis="y", labelsize=7)
        fig.suptitle(f"{self.style} x {self.intensity:g} on {self.model}", fontsize=10)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        return buffer.getvalue()

    def html_section(self) -> str:
        """The audit as an HTML fragment (tables and the embedded plot), for reports."""
        e = html.escape
        parts = [f"<h3>Side-effect audit: {e(self.style)} x {self.intensity:g} on {e(self.model)} "
                 f"({self.probes} neutral probes)</h3>"]
        png = self.figure_png()
        if png is not None:
            parts.append('<img alt="audit" src="data:image/png;base64,'
                         + base64.b64encode(png).decode() + '">')
        if self.features:
            rows = "".join(f"<tr><td>{f.feature}</td><td>{e(f.label)}</td><td>{f.unsteered:.4f}</td>"
                           f"<td>{f.steered:.4f}</td><td>{f.change:+.4f}</td></tr>" for f in self.features)
            parts.append(f"<p>Features of {e(str(self.dictionary))} at {e(str(self.site))} that moved "
                         "most (mean activity over the probes)</p><table border=1 cellpadding=3>"
                         "<tr><th>feature</th><th>label</th><th>unsteered</th><th>steered</th>"
                         f"<th>change</th></tr>{rows}</table>")
        if self.kl is not None:
            cells = "".join(f"<td>{v:.3f}</td>" for v in self.kl)
            parts.append(f"<p>KL(steered || unsteered) of the next-token distribution per generated "
                         f"position (nats; mean {self.mean_kl:.4f})</p><table border=1 cellpadding=3>"
                         f"<tr>{cells}</tr></table>")
        if self.measures:
            ordered = sorted(self.measures, key=lambda m: (not m.target, -abs(m.z)))
            rows = "".join(f"<tr><td>{e(m.name)}</td><td>{m.unsteered:.4f}</td><td>{m.steered:.4f}</td>"
                           f"<td>{m.change:+.4f}</td><td>{_z(m.z)}</td>"
                           f"<td>{'target' if m.target else 'side effect'}</td></tr>" for m in ordered)
            parts.append("<table border=1 cellpadding=3><tr><th>measure</th><th>unsteered</th>"
                         f"<th>steered</th><th>change</th><th>z</th><th></th></tr>{rows}</table>")
        parts += [f"<p>note: {e(n)}</p>" for n in self.notes]
        return "\n".join(parts)

    def to_html(self, path: str | Path | None = None) -> str:
        """A standalone HTML page (written atomically to ``path`` when given)."""
        page = (f'<!doctype html><meta charset="utf-8"><title>polysteer audit: {html.escape(self.style)}'
                f"</title>\n<h1>Side-effect audit</h1>\n{self.html_section()}\n")
        if path is not None:
            with atomic_path(Path(path)) as tmp:
                tmp.write_text(page)
        return page

    def to_json(self) -> str:
        """The report as one JSON object."""
        return json.dumps(self.to_dict())


def _finite(v: float) -> float | None:
    return v if isinstance(v, int | float) and math.isfinite(v) else None


def _z(z: float) -> str:
    return "inf" if math.isinf(z) else f"{z:+.1f}"


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# -- the workflow ---------------------------------------------------------------------------------
def default_audit_dictionary(adapter: Any, plugins: PluginManager | None = None) -> FeatureDictionary | None:
    """The first shipped sparse autoencoder made on this model (fingerprint and site match), or None."""
    plugins = plugins or current_plugin_manager()
    shipped = plugins.shipped_folders("dictionary")
    for folder in shipped:
        for candidate in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
            meta = candidate / "dictionary.json"
            if not meta.is_file():
                continue
            try:
                kind = json.loads(meta.read_text()).get("kind")
            except (OSError, ValueError):
                continue
            if kind != "sae":
                continue
            dictionary = resolve_dictionary(str(candidate), plugins=plugins)
            try:
                binding = adapter.bind(dictionary.info.site)
                dictionary.check_compatible(adapter.model_fingerprint, dictionary.info.site,
                                            binding.channels)
            except (PolysteerError, KeyError, ValueError):
                continue
            return dictionary
    return None


def _style_words(style: Style) -> set[str]:
    words = set()
    for text in [style.name, *(c.name for c in style.components),
                 *(str(c.feature) for c in style.components if c.feature is not None),
                 *(c.concept for c in style.components if c.concept)]:
        words.update(w for w in re.split(r"[^a-z0-9]+", text.lower()) if len(w) >= 4)
    return words


def _targets(style: Style, names: Sequence[str]) -> set[str]:
    """The measure names that share a word (4+ letters of common prefix) with the style, leaving
    out words that every measure of a family carries (``avatar`` in ``avatar_mouth_smile``)."""
    words = _style_words(style)
    split = {n: [w for w in re.split(r"[^a-z0-9]+", n.lower()) if w] for n in names}
    counts: dict[str, int] = {}
    for parts in split.values():
        for w in set(parts):
            counts[w] = counts.get(w, 0) + 1
    common = {w for w, c in counts.items() if len(names) > 2 and c > len(names) / 2}

    def near(a: str, b: str) -> bool:
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        return k >= 4 and k >= min(len(a), len(b)) - 3

    return {n for n, parts in split.items()
            if any(near(w, m) for w in words for m in parts if m not in common)}


def _mean_activity(dictionary: FeatureDictionary, acts: torch.Tensor, keep: torch.Tensor | None
                   ) -> torch.Tensor:
    """``(features,)`` mean code over the kept positions of ``acts`` (``(..., P, C)``)."""
    acts = acts.to(dictionary.device if hasattr(dictionary, "device") else acts.device).float()
    flat = acts.reshape(-1, acts.shape[-1])
    if keep is not None:
        flat = flat[keep.reshape(-1).to(flat.device)]
    norms = flat.norm(dim=-1)
    site_norm = dictionary.info.site_norm or float(norms.median())
    flat = flat[norms <= OUTLIER_FACTOR * site_norm]  # attention sinks read huge on anything
    with torch.no_grad():
        return dictionary.encode(flat).float().mean(dim=0).cpu()


def _text_positions(generation: Any, width: int) -> tuple[torch.Tensor, list[int]]:
    """``(rows, width)`` which replayed positions are real tokens (not padding, not past the end,
    not the first token: an attention sink), and each row's number of generated tokens."""
    padding = torch.as_tensor(generation.extras.get("padding", torch.zeros(len(generation.outputs))))
    lengths = generation.row_lengths().cpu()
    pos = torch.arange(width)[None]
    keep = (pos > padding[:, None]) & (pos < lengths[:, None])
    generated = (lengths - generation.prompt_length).clamp_min(0).tolist()
    return keep, [int(g) for g in generated]


def _kl_rows(steered: torch.Tensor, plain: torch.Tensor, prompt: int, generated: list[int]
             ) -> list[list[float]]:
    """Per row, KL(steered || plain) at the positions that predict each generated token."""
    out = []
    for r, n in enumerate(generated):
        if n < 1:
            out.append([])
            continue
        a = torch.log_softmax(steered[r, prompt - 1: prompt - 1 + n].float(), dim=-1)
        b = torch.log_softmax(plain[r, prompt - 1: prompt - 1 + n].float(), dim=-1)
        out.append((a.exp() * (a - b)).sum(-1).clamp_min(0.0).tolist())
    return out


def _name(dictionary: FeatureDictionary | None) -> str | None:
    """A dictionary's name (its folder's name when it was loaded from one)."""
    if dictionary is None:
        return None
    source = getattr(dictionary, "source", None)
    if source:
        return Path(str(source)).name
    return f"{dictionary.kind} dictionary ({dictionary.d_features} features)"


def _units(inputs: Any) -> Any:
    """Inputs as effect measures take them: a batch given as ``{"key": [a, b]}`` becomes
    ``[{"key": a}, {"key": b}]`` (one unit each); anything else as it is."""
    if isinstance(inputs, dict) and len(inputs) == 1:
        (key, value), = inputs.items()
        if isinstance(value, list | tuple):
            return [{key: v} for v in value]
    return inputs


def _paired(name: str, base: torch.Tensor, steered: torch.Tensor, target: bool) -> MeasureMove:
    base, steered = torch.as_tensor(base).float().flatten(), torch.as_tensor(steered).float().flatten()
    ok = torch.isfinite(base) & torch.isfinite(steered)
    diff = (steered - base)[ok]
    n = int(ok.sum())
    se = float(diff.std() / math.sqrt(n)) if n > 1 else math.nan

    def mean(t: torch.Tensor) -> float:
        return float(t[ok].mean()) if n else math.nan
    return MeasureMove(name, mean(base), mean(steered), float(diff.mean()) if n else math.nan,
                       se, n, target)


def audit(adapter: Any, style: Style | str | Path, intensity: float = 1.0, *,
          probes: Any = None, dictionary: Any = "auto", top: int = 10,
          measures: Sequence[str] | None = None, generate: dict[str, Any] | None = None,
          effects: bool = True, plugins: PluginManager | None = None) -> AuditReport:
    """Audit ``style`` at ``intensity`` on ``adapter``: see the module docstring.

    ``probes``: generation inputs (default: the shipped neutral probes of the model's modality);
    ``dictionary``: a dictionary (object, name or folder) whose features are watched, ``"auto"``
    for the shipped SAE made on this model, ``None`` for none; ``top``: how many features to list;
    ``measures``: extra registered generation measures (``(generation, baseline) -> float``) to
    compare, such as ``voice_wer``; ``generate``: generation options (default: the probes');
    ``effects``: whether to run the modality's registered effect measures (image, voice).
    """
    plugins = plugins or current_plugin_manager()
    style = load_style(style) if isinstance(style, str | Path) else style
    if probes is None:
        inputs, options = probe_inputs(adapter)
    else:
        inputs, options = adapter.prepare_inputs(probes), neutral_probes(adapter.modality)["generate"]
    options = {**options, **(generate or {})}
    if dictionary == "auto":
        dictionary = default_audit_dictionary(adapter, plugins)
    elif dictionary is not None:
        dictionary = resolve_dictionary(dictionary, plugins=plugins)
    site = dictionary.info.site if dictionary is not None else None
    capture = [site] if site else []
    notes: list[str] = []

    with steer(adapter, None, plugins=plugins):
        baseline = adapter.generate(inputs, **options)
    steered = None
    count = len(baseline)
    report = AuditReport(style.name, adapter.name, adapter.modality, float(intensity), count,
                         _name(dictionary), site, notes=notes)

    # replay: the unsteered continuation through both (text: next-token logits per position)
    with steer(adapter, None, capture=capture, plugins=plugins) as plain_run:
        plain_logits = adapter.replay(baseline)
    if plain_logits is not None:
        with steer(adapter, style, intensity, capture=capture, plugins=plugins) as run:
            steered_logits = adapter.replay(baseline)
        notes += [f"{name}: {why}" for name, why in run.not_applied]
        keep, generated = _text_positions(baseline, plain_logits.shape[1])
        rows = _kl_rows(steered_logits, plain_logits, baseline.prompt_length, generated)
        report.kl_per_probe = rows
        width = max((len(r) for r in rows), default=0)
        report.kl = [sum(r[j] for r in rows if len(r) > j) / max(1, sum(len(r) > j for r in rows))
                     for j in range(width)]
        if dictionary is not None:
            base_acts = _mean_activity(dictionary, plain_run.captured(site), keep)
            steer_acts = _mean_activity(dictionary, run.captured(site), keep)
    else:
        with steer(adapter, None, capture=capture, plugins=plugins) as plain_run:
            baseline = adapter.generate(inputs, **options)
        with steer(adapter, style, intensity, capture=capture, plugins=plugins) as run:
            steered = adapter.generate(inputs, **options)
        notes += [f"{name}: {why}" for name, why in run.not_applied]
        if dictionary is not None:
            base_acts = _mean_activity(dictionary, plain_run.captured(site), None)
            steer_acts = _mean_activity(dictionary, run.captured(site), None)
        for entry in plugins.effect_measures if effects else []:
            # text's effect measure scores label tokens it is given: it is not a side-effect read-out
            if getattr(entry.value, "modality", None) != adapter.modality or adapter.modality == "text":
                continue
            try:
                effect = plugins.effect_measures.get(entry.name)
            except PolysteerError as err:
                notes.append(f"effect measure {entry.name} skipped: {err}")
                continue
            units = _units(inputs)
            before = effect(adapter, units, None, 0.0, options)
            after = effect(adapter, units, style, intensity, options)
            targets = _targets(style, list(before))
            report.measures += [_paired(m, before[m], after[m], m in targets) for m in before]
    if measures and steered is None:
        with steer(adapter, style, intensity, plugins=plugins):
            steered = adapter.generate(inputs, **options)
    for name in measures or []:
        measure = plugins.measures.get(name)
        values = [measure(baseline, baseline), measure(steered, baseline)]
        report.measures.append(_paired(name, torch.tensor([values[0]]), torch.tensor([values[1]]),
                                       name in _targets(style, [name])))
    if dictionary is not None:
        change = steer_acts - base_acts
        order = change.abs().argsort(descending=True)[:top].tolist()
        report.features = [FeatureMove(i, dictionary.labels[i], float(base_acts[i]), float(steer_acts[i]))
                           for i in order]
    else:
        notes.append("no dictionary of this model to watch features with (pass dictionary=...)")
    return report
