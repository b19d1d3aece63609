"""Label features by their measured effect, for any modality.

The workflow exists once, here; a modality plugin contributes only an :class:`EffectMeasure`
(registered through ``polysteer_register_effect_measures``): how to generate from held-out inputs
under a style and measure the result, one value per *unit* (a prompt position, an image, a
sentence) for each named measure (``label tokens``, ``avatar_mouth_smile``, ``brightness``,
``pitch``...).

Given a dictionary and :class:`Candidate` features (a feature, the measure it is expected to move,
and the sign of that expectation, usually its correlation with the measure: see
:func:`correlated_candidates`), :func:`measure_effects`
measures the held-out inputs once unsteered (the baseline) and once per candidate with the feature
added (:func:`probe_style`: ``add`` at a fixed intensity, optionally within a position mask), and
takes the paired per-unit change. A candidate *holds* when the mean change has the expected sign
and exceeds both a floor (per measure) and ``significance`` standard errors of the per-unit
changes. :func:`choose_labels` names the features whose candidates held (``<measure>+ (N)`` when
adding the feature raises the measure, ``<measure>- (N)`` when it lowers it; the strongest effect,
or the first that held, wins) and keeps the evidence: correlation, where and how hard it was added,
the change and its standard error, the floor, and the largest changes of the other measures (side
effects). :func:`label_by_effect` does both, sets the dictionary's labels, and with ``folder``
writes the evidence to ``labels.json`` (:mod:`polysteer.features.labels`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from polysteer.errors import PolysteerError
from polysteer.features.dictionary import FeatureDictionary
from polysteer.features.labels import FeatureReport, apply_labels, labels_path, load_labels
from polysteer.steering.style import Style

MeasureFn = Callable[[Any, Any, "Style | None", float, Mapping[str, Any]], Mapping[str, torch.Tensor]]
"""``(adapter, inputs, style, intensity, options) -> {measure name: (units,) values}``; NaN marks a
unit where a measure is undefined (silence has no pitch)."""
SideEffects = Callable[[Mapping[str, torch.Tensor], str], dict[str, float]]


@dataclass(frozen=True)
class EffectMeasure:
    """A modality's way of measuring what steering does to its outputs.

    Attributes:
        measure: generates from ``inputs`` under ``style`` at ``intensity`` (``None`` and ``0.0``:
            unsteered) and returns ``{name: (units,) tensor}``; the same inputs and ``options``
            (seeds, steps) give paired units.
        modality: ``text``, ``image``, ``voice``...
        description: what is measured, one line.
        side_effects: ``(changes, measure) -> {other measure: mean change}``, the side effects kept
            as evidence; ``None``: the :data:`SIDE_EFFECTS` largest mean changes of other measures.
    """

    measure: MeasureFn
    modality: str
    description: str = ""
    side_effects: SideEffects | None = None

    def __call__(self, adapter: Any, inputs: Any, style: Style | None, intensity: float,
                 options: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        values = self.measure(adapter, inputs, style, intensity, dict(options or {}))
        return {name: torch.as_tensor(v).detach().float().reshape(-1).cpu() for name, v in values.items()}


SIDE_EFFECTS = 3
"""How many other measures the default side-effect record keeps (largest mean changes)."""


def largest_changes(changes: Mapping[str, torch.Tensor], measure: str, top: int = SIDE_EFFECTS
                    ) -> dict[str, float]:
    """The default side effects: the ``top`` measures other than ``measure`` that moved most."""
    means = {m: _nanmean(c) for m, c in changes.items() if m != measure}
    ranked = sorted((m for m in means if math.isfinite(means[m])), key=lambda m: -abs(means[m]))
    return {m: round(means[m], 3) for m in ranked[:top]}


@dataclass
class Candidate:
    """A feature expected to move ``measure``: up if ``correlation`` > 0, down if < 0.

    ``positions`` is a position mask (``{"kind": "all"}``, a ``region``...) the feature is added
    within.
    """

    feature: int
    measure: str
    correlation: float = 1.0
    positions: dict[str, Any] = field(default_factory=lambda: {"kind": "all"})


def correlated_candidates(codes: torch.Tensor, measures: Mapping[str, torch.Tensor], per_measure: int = 2,
                          positions: Callable[[int], dict[str, Any]] | None = None) -> list[Candidate]:
    """For each measure (in order) the ``per_measure`` features whose activations ``codes``
    ``(rows, features)`` correlate most, by magnitude, with its values ``(rows,)`` (NaN rows left
    out); features that never vary are skipped. ``positions(feature)`` gives each one's mask."""
    from polysteer.features.search import correlations

    found = []
    for measure, values in measures.items():
        r = correlations(codes, values)
        for feature in r.abs().argsort(descending=True)[:per_measure].tolist():
            if r[feature] != 0:
                found.append(Candidate(feature, measure, float(r[feature]),
                                       positions(feature) if positions else {"kind": "all"}))
    return found


@dataclass
class Outcome:
    """What adding one candidate did: its measure's mean change, the standard error of the
    per-unit changes, the floor it had to clear, whether it held, and its side effects."""

    feature: int
    measure: str
    correlation: float
    intensity: float
    positions: dict[str, Any]
    change: float
    standard_error: float
    floor: float
    units: int
    holds: bool
    strength: float
    side_effects: dict[str, float] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        """The record kept for a label (rounded for reading)."""
        return {"feature": self.feature, "measure": self.measure,
                "correlation": round(self.correlation, 3), "intensity": self.intensity,
                "positions": self.positions, "change": round(self.change, 3),
                "standard_error": round(self.standard_error, 4), "floor": round(self.floor, 4),
                "side_effects": self.side_effects}


def effect_measure(measure: str | EffectMeasure, manager: Any = None) -> EffectMeasure:
    """A registered effect measure by name (did-you-mean on a typo), or ``measure`` itself."""
    if isinstance(measure, EffectMeasure):
        return measure
    if manager is None:
        from polysteer.plugin.manager import current_plugin_manager

        manager = current_plugin_manager()
    return manager.effect_measures.get(measure)


def probe_style(dictionary: FeatureDictionary, feature: int | str, positions: Mapping[str, Any] | None = None,
                intervention: str = "add", name: str = "probe", **component: Any) -> Style:
    """A one-component style that applies ``feature`` of the in-memory ``dictionary`` (``add`` by
    default), within ``positions`` if given: how every modality probes one feature."""
    spec: dict[str, Any] = {"dictionary": "in-memory", "feature": feature, "intervention": intervention,
                            **component}
    if positions is not None:
        spec["positions"] = dict(positions)
    style = Style.from_dict({"name": name, "components": [spec]})
    style.components[0].dictionary = dictionary
    return style


def _nanmean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def _floor(floors: Mapping[str, float] | float, measure: str) -> float:
    return float(floors) if isinstance(floors, int | float) else float(floors.get(measure, 0.0))


def measure_effects(adapter: Any, dictionary: FeatureDictionary, candidates: Sequence[Candidate],
                    inputs: Any, measure: str | EffectMeasure, *, intensity: float,
                    floors: Mapping[str, float] | float = 0.0, significance: float = 0.0,
                    options: Mapping[str, Any] | None = None,
                    baseline: Mapping[str, torch.Tensor] | None = None, progress: bool = False,
                    ) -> list[Outcome]:
    """Add each candidate at ``intensity`` on ``inputs`` and compare with the unsteered baseline.

    The per-unit change of the candidate's measure (steered minus unsteered, units where either is
    NaN left out) gives its mean and standard error; it holds when ``mean x sign`` exceeds both
    its floor (``floors``: one number, or per measure; missing measures 0) and ``significance``
    standard errors. A feature added within the same positions is measured once for all the
    candidates that name it. ``baseline`` reuses unsteered measures taken before.
    """
    from tqdm.auto import tqdm

    effect = effect_measure(measure)
    options = dict(options or {})
    base = dict(baseline) if baseline is not None else effect(adapter, inputs, None, 0.0, options)
    unknown = sorted({c.measure for c in candidates} - set(base))
    if unknown:  # before any steered run: a typo should not cost a sweep
        raise PolysteerError(f"the effect measure gives no {', '.join(map(repr, unknown))}; it gives "
                             f"{', '.join(sorted(base))}: name candidates by one of those")
    done: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    out = []
    for c in tqdm(candidates, desc="measuring effects", unit="candidate", disable=not progress, leave=False):
        key = (int(c.feature), repr(sorted(c.positions.items())))
        if key not in done:
            got = effect(adapter, inputs, probe_style(dictionary, c.feature, c.positions), intensity, options)
            done[key] = {m: got[m] - base[m] for m in base if m in got}
        changes = done[key]
        change = changes[c.measure]
        finite = change[torch.isfinite(change)]
        mean = float(finite.mean()) if len(finite) else math.nan
        se = float(finite.std()) / math.sqrt(len(finite)) if len(finite) > 1 else 0.0
        sign = 1.0 if c.correlation >= 0 else -1.0
        floor = _floor(floors, c.measure)
        bar = max(floor, significance * se) if significance > 0 else floor  # a floor may be < 0
        holds = math.isfinite(mean) and mean * sign > bar
        strength = mean * sign / max(bar, 1e-12) if math.isfinite(mean) else -math.inf
        side = (effect.side_effects or largest_changes)(changes, c.measure)
        out.append(Outcome(int(c.feature), c.measure, float(c.correlation), intensity, dict(c.positions),
                           mean, se, floor, len(finite), holds, strength, side))
    return out


def effect_label(outcome: Outcome) -> str:
    """``<measure>+ (N)`` (adding feature N raises the measure) or ``<measure>- (N)``."""
    return f"{outcome.measure}{'+' if outcome.correlation >= 0 else '-'} ({outcome.feature})"


def choose_labels(outcomes: Sequence[Outcome], prefer: str = "strongest",
                  naming: Callable[[Outcome], str] = effect_label) -> dict[str, Outcome]:
    """The label of every feature with a candidate that held: ``{label: outcome}``.

    With ``prefer="strongest"`` a feature with several holding candidates gets the one whose
    effect cleared its bar by the largest factor; with ``"first"`` the first one in order.
    """
    if prefer not in ("strongest", "first"):
        raise ValueError(f"prefer must be 'strongest' or 'first', not {prefer!r}")
    best: dict[int, tuple[int, Outcome]] = {}
    for i, o in enumerate(outcomes):
        if not o.holds:
            continue
        kept = best.get(o.feature)
        if kept is None or (prefer == "strongest" and o.strength > kept[1].strength):
            best[o.feature] = (i, o)
    return {naming(o): o for _, o in sorted(best.values(), key=lambda item: item[0])}


@dataclass
class EffectLabels:
    """The result of :func:`label_by_effect`: evidence per label, every outcome, the reports."""

    evidence: dict[str, dict[str, Any]]
    outcomes: list[Outcome]
    reports: list[FeatureReport]

    def tried(self) -> list[dict[str, Any]]:
        """Every candidate's outcome as plain data (what the build records as ``candidates``)."""
        return [{"feature": o.feature, "measure": o.measure, "correlation": round(o.correlation, 3),
                 "change": round(o.change, 3), "standard_error": round(o.standard_error, 4),
                 "holds": o.holds} for o in self.outcomes]


def effect_reports(dictionary: FeatureDictionary, outcomes: Sequence[Outcome],
                   chosen: Mapping[str, Outcome], base: Sequence[FeatureReport] | None = None,
                   ) -> list[FeatureReport]:
    """One :class:`FeatureReport` per feature: the label, the effect score of its best candidate
    (mean change x expected sign), ``flagged`` when candidates were tried and none held, and the
    evidence in ``details["effect"]`` / ``details["tried"]``. ``base`` reports are updated."""
    reports = list(base) if base is not None else [
        FeatureReport(i, label) for i, label in enumerate(dictionary.labels)]
    by_feature: dict[int, list[Outcome]] = {}
    for o in outcomes:
        by_feature.setdefault(o.feature, []).append(o)
    labelled = {o.feature: (label, o) for label, o in chosen.items()}
    for feature, tried in by_feature.items():
        report = reports[feature]
        if feature in labelled:
            label, o = labelled[feature]
            if report.source != "user":
                report.label = label
            report.details["effect"] = o.evidence()
        else:
            o = max(tried, key=lambda t: t.strength)
        report.effect_score = _plain(o.change * (1.0 if o.correlation >= 0 else -1.0))
        report.flagged = feature not in labelled
        report.details["tried"] = [{k: _plain(v) for k, v in asdict(t).items() if k != "side_effects"}
                                   for t in tried]
    return reports


def _plain(value: Any) -> Any:
    """``value`` for a JSON file: floats rounded, NaN and infinities (no effect measured) as None."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def label_by_effect(adapter: Any, dictionary: FeatureDictionary, candidates: Sequence[Candidate],
                    inputs: Any, measure: str | EffectMeasure, *, intensity: float,
                    floors: Mapping[str, float] | float = 0.0, significance: float = 0.0,
                    prefer: str = "strongest", options: Mapping[str, Any] | None = None,
                    folder: str | os.PathLike | None = None, progress: bool = False,
                    extra: Mapping[str, Any] | None = None) -> EffectLabels:
    """Measure every candidate's effect, label the features whose effect holds, set
    ``dictionary.labels`` and return the evidence (see the module docstring).

    Features without a holding candidate keep their labels. ``extra`` is added to every label's
    evidence (e.g. which seeds were used). With ``folder`` the reports are saved there as
    ``labels.json`` (user labels in it are kept) and the labels in the dictionary's own files.
    """
    outcomes = measure_effects(adapter, dictionary, candidates, inputs, measure, intensity=intensity,
                               floors=floors, significance=significance, options=options,
                               progress=progress)
    chosen = choose_labels(outcomes, prefer)
    labels = list(dictionary.labels)
    for label, o in chosen.items():
        labels[o.feature] = label
    dictionary.labels = labels
    evidence = {label: {**o.evidence(), **dict(extra or {})} for label, o in chosen.items()}
    base = None
    if folder is not None and labels_path(folder).exists():
        old = load_labels(folder)
        base = old if len(old) == dictionary.d_features else None
    reports = effect_reports(dictionary, outcomes, chosen, base)
    if folder is not None:
        reports = apply_labels(dictionary, reports, folder)
    return EffectLabels(evidence, outcomes, reports)
