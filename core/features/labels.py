"""Feature reports and labels, for any modality: statistics streamed over activations, a sidecar.

A :class:`FeatureReport` per feature holds what a label is judged by: the top-activating examples
(example id, position, value), the activation density (fraction of positions where the feature is
above zero), a histogram of its positive values in fixed bins, the label and where it came from
(``auto`` or ``user``), and the result of verifying the label by its effect (a score and a flag).
Modality plugins add their own evidence (contexts, promoted tokens, ...) under ``details``.

:func:`collect_reports` streams ``(positions, channels)`` activations through a dictionary keeping
only ``top_k`` candidates per feature, so memory does not grow with the corpus. Reports live in a
JSON sidecar, ``labels.json``, in the dictionary folder (:func:`save_labels`, :func:`load_labels`);
:func:`apply_labels` also writes the labels into the dictionary itself. A label the user set
(:func:`set_label`) is never replaced by automatic labelling.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from polysteer.errors import CorruptFileError, SteeringError
from polysteer.features.dictionary import FeatureDictionary
from polysteer.io.fileio import read_json, write_json

LABELS_FILE = "labels.json"
LABELS_FORMAT = "polysteer-labels"
LABELS_VERSION = 1
SOURCES = ("auto", "user")
HIST_BINS = 20
HIST_MAX = 4.0
"""Histograms span ``[0, HIST_MAX x scale]`` of each feature in :data:`HIST_BINS` equal bins."""


@dataclass
class TopExample:
    """One top activation: ``example`` (its index in the stream), ``position`` in it, ``value``."""

    example: int
    position: int
    value: float


@dataclass
class FeatureReport:
    """Everything known about one feature's label.

    Attributes:
        feature: the feature's index in the dictionary.
        label: its short label.
        source: ``auto`` (made by a rule; may be replaced) or ``user`` (never replaced).
        top: the strongest activations, strongest first (only where the feature is above zero).
        density: fraction of positions where the feature's value is above zero.
        positions: how many positions were seen.
        histogram: counts of positive values per bin; the last bin also holds larger values.
        bin_edges: ``len(histogram) + 1`` edges of the bins.
        effect_score: how much steering with the feature raised its label's evidence (``None``
            until verified); the modality plugin defines the measure.
        flagged: ``True`` when the label did not hold up under verification.
        details: modality-specific evidence (e.g. ``contexts``, ``promoted``, ``label_tokens``).
    """

    feature: int
    label: str
    source: str = "auto"
    top: list[TopExample] = field(default_factory=list)
    density: float = 0.0
    positions: int = 0
    histogram: list[int] = field(default_factory=list)
    bin_edges: list[float] = field(default_factory=list)
    effect_score: float | None = None
    flagged: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> FeatureReport:
        source = str(data.get("source", "auto"))
        if source not in SOURCES:
            raise ValueError(f"source {source!r} is not one of {SOURCES}")
        score = data.get("effect_score")
        return FeatureReport(
            feature=int(data["feature"]), label=str(data["label"]), source=source,
            top=[TopExample(int(t["example"]), int(t["position"]), float(t["value"]))
                 for t in data.get("top", [])],
            density=float(data.get("density", 0.0)), positions=int(data.get("positions", 0)),
            histogram=[int(c) for c in data.get("histogram", [])],
            bin_edges=[float(e) for e in data.get("bin_edges", [])],
            effect_score=None if score is None else float(score),
            flagged=bool(data.get("flagged", False)), details=dict(data.get("details", {})))


# -- streaming statistics ------------------------------------------------------------------------
class ReportCollector:
    """Streaming top-k, density and histogram per feature; feed it with :meth:`add`.

    State is ``O(d_features x (top_k + bins))`` whatever the number of examples.
    """

    def __init__(self, dictionary: FeatureDictionary, top_k: int = 10, bins: int = HIST_BINS,
                 hist_max: float = HIST_MAX):
        if top_k < 1 or bins < 1 or hist_max <= 0:
            raise ValueError("top_k and bins must be >= 1 and hist_max > 0")
        self.dictionary, self.top_k, self.bins = dictionary, top_k, bins
        n = dictionary.d_features
        self.device = next(iter(dictionary.buffers()), torch.empty(0)).device
        self.values = torch.full((n, 0), -torch.inf, device=self.device)
        self.examples = torch.zeros((n, 0), dtype=torch.long, device=self.device)
        self.where = torch.zeros((n, 0), dtype=torch.long, device=self.device)
        self.fired = torch.zeros(n, dtype=torch.long, device=self.device)
        self.counts = torch.zeros((n, bins), dtype=torch.long, device=self.device)
        scales = dictionary.scales.detach().float().to(self.device).clamp_min(1e-12)
        self.width = scales * hist_max / bins  # (n,) bin width per feature
        self.seen = 0
        self.next_example = 0

    @torch.no_grad()
    def add(self, activations: torch.Tensor, example: int | None = None, offset: int = 0) -> None:
        """Add one example's ``(positions, channels)`` activations; ``example`` defaults to a
        running count, and positions are recorded as ``offset + row``."""
        example = self.next_example if example is None else int(example)
        self.next_example = example + 1
        if activations.ndim != 2:
            raise ValueError(f"expected (positions, channels) activations, got shape "
                             f"{tuple(activations.shape)}")
        if activations.shape[0] == 0:
            return
        f = self.dictionary.encode(activations.to(self.device, torch.float32)).float().T  # (n, P)
        positions = f.shape[1]
        self.seen += positions
        positive = f > 0
        self.fired += positive.sum(1)
        index = (f / self.width[:, None]).floor().long().clamp_(0, self.bins - 1)
        self.counts.scatter_add_(1, index, positive.long())
        pos = (torch.arange(positions, device=self.device) + offset).expand_as(f)
        values = torch.cat([self.values, f], dim=1)
        where = torch.cat([self.where, pos], dim=1)
        examples = torch.cat([self.examples, torch.full_like(pos, example)], dim=1)
        k = min(self.top_k, values.shape[1])
        top = values.topk(k, dim=1)  # ties: the earlier candidate (lower column) is kept first
        self.values = top.values
        self.where = where.gather(1, top.indices)
        self.examples = examples.gather(1, top.indices)

    def reports(self, labels: Sequence[str] | None = None) -> list[FeatureReport]:
        """One :class:`FeatureReport` per feature (labels default to the dictionary's)."""
        labels = list(labels) if labels is not None else list(self.dictionary.labels)
        values, where, examples = self.values.cpu(), self.where.cpu(), self.examples.cpu()
        counts, fired, width = self.counts.cpu(), self.fired.cpu(), self.width.cpu()
        out = []
        for i in range(self.dictionary.d_features):
            top = [TopExample(int(e), int(p), float(v))
                   for v, p, e in zip(values[i].tolist(), where[i].tolist(), examples[i].tolist(),
                                      strict=True) if v > 0]
            edges = (torch.arange(self.bins + 1) * width[i]).tolist()
            out.append(FeatureReport(
                feature=i, label=labels[i], top=top, positions=self.seen,
                density=float(fired[i]) / self.seen if self.seen else 0.0,
                histogram=counts[i].tolist(), bin_edges=edges))
        return out


def collect_reports(dictionary: FeatureDictionary, batches: Iterable[Any], top_k: int = 10,
                    bins: int = HIST_BINS, hist_max: float = HIST_MAX) -> list[FeatureReport]:
    """Reports for every feature of ``dictionary`` from a stream of activations.

    ``batches`` yields ``(positions, channels)`` tensors, one per example, or lists of them (a
    batch of examples); examples are numbered in the order they arrive. Memory is bounded by
    ``top_k`` candidates and ``bins`` counts per feature.
    """
    collector = ReportCollector(dictionary, top_k, bins, hist_max)
    for batch in batches:
        items = [batch] if isinstance(batch, torch.Tensor) else batch
        for acts in items:
            collector.add(acts)
    return collector.reports()


# -- the sidecar ---------------------------------------------------------------------------------
def labels_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / LABELS_FILE


def load_labels(folder: str | os.PathLike) -> list[FeatureReport]:
    """The reports saved in ``folder/labels.json``; :class:`CorruptFileError` if it is damaged."""
    path = labels_path(folder)
    data = read_json(path)
    try:
        if not isinstance(data, dict) or data.get("format") != LABELS_FORMAT:
            raise KeyError("format")
        if int(data.get("version", 0)) > LABELS_VERSION:
            raise ValueError(f"version {data['version']} is newer than this polysteer reads")
        reports = [FeatureReport.from_json(r) for r in data["features"]]
        if [r.feature for r in reports] != list(range(len(reports))):
            raise ValueError("features are not numbered 0..n-1 in order")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CorruptFileError(
            f"{path} is not a valid polysteer labels file ({type(err).__name__}: {err}); delete it "
            "and label the dictionary again") from err
    return reports


def keep_user_labels(reports: list[FeatureReport], folder: str | os.PathLike) -> list[FeatureReport]:
    """``reports`` (changed in place) with the user's labels from ``folder/labels.json`` put back."""
    folder = Path(folder)
    if not labels_path(folder).exists():
        return reports
    old = load_labels(folder)
    if len(old) != len(reports):
        return reports  # another dictionary's labels: nothing to carry over
    for new, before in zip(reports, old, strict=True):
        if before.source == "user" and new.source != "user":
            new.label, new.source = before.label, "user"
    return reports


def save_labels(folder: str | os.PathLike, reports: Sequence[FeatureReport]) -> Path:
    """Write ``folder/labels.json`` atomically; user labels already there are kept."""
    folder = Path(folder)
    reports = keep_user_labels(list(reports), folder)
    data = {"format": LABELS_FORMAT, "version": LABELS_VERSION, "d_features": len(reports),
            "features": [r.to_json() for r in reports]}
    path = labels_path(folder)
    write_json(path, data)
    return path


def unique_labels(reports: Sequence[FeatureReport]) -> list[str]:
    """The reports' labels, with repeats made unique by appending ``#index``."""
    seen: dict[str, int] = {}
    for r in reports:
        seen[r.label] = seen.get(r.label, 0) + 1
    return [r.label if seen[r.label] == 1 else f"{r.label} #{r.feature}" for r in reports]


def apply_labels(dictionary: FeatureDictionary, reports: Sequence[FeatureReport],
                 folder: str | os.PathLike | None = None) -> list[FeatureReport]:
    """Set ``dictionary.labels`` from ``reports``; with ``folder``, save them there too.

    A native dictionary folder gets the labels in its ``dictionary.json`` (tensors untouched); a
    missing or empty folder gets the whole dictionary; a folder of another format only the
    sidecar. ``labels.json`` is always written. User labels in it win over automatic ones.
    Repeated labels get ``#index`` appended in the dictionary (features are found by label, so
    labels there must be unique). Returns the reports as saved.
    """
    reports = list(reports)
    if len(reports) != dictionary.d_features:
        raise SteeringError(f"{len(reports)} reports for {dictionary.describe()}")
    if folder is not None:
        reports = keep_user_labels(reports, Path(folder))
    dictionary.labels = unique_labels(reports)
    if folder is not None:
        folder = Path(folder)
        meta_path = folder / "dictionary.json"
        meta = read_json(meta_path) if meta_path.exists() else None
        if isinstance(meta, dict) and meta.get("d_features") == dictionary.d_features:
            meta["labels"] = dictionary.labels  # only the labels change: tensors stay as stored
            write_json(meta_path, meta)
        elif not folder.exists() or not any(folder.iterdir()):
            dictionary.save(folder)
        # else: a folder in another format (e.g. SAELens): only the sidecar is written
        save_labels(folder, reports)
    return reports


def set_label(folder: str | os.PathLike, feature: int | str, label: str) -> FeatureReport:
    """Set a user label on ``feature`` (index or current label) in a dictionary folder.

    The label goes into ``labels.json`` (source ``user``) and into ``dictionary.json``'s labels.
    """
    folder = Path(folder)
    label = str(label).strip()
    if not label:
        raise SteeringError("a label cannot be empty")
    meta_path = folder / "dictionary.json"
    meta = read_json(meta_path) if meta_path.exists() else None
    names = list(meta["labels"]) if isinstance(meta, dict) and "labels" in meta else None
    if labels_path(folder).exists():
        reports = load_labels(folder)
    elif names is not None:
        reports = [FeatureReport(i, name) for i, name in enumerate(names)]
    else:
        raise FileNotFoundError(f"{folder} has neither {LABELS_FILE} nor dictionary.json")
    index = _feature(feature, reports, names)
    reports[index].label, reports[index].source = label, "user"
    save_labels(folder, reports)
    if names is not None and len(names) == len(reports):
        meta["labels"] = unique_labels(reports)
        write_json(meta_path, meta)
    return reports[index]


def _feature(feature: int | str, reports: list[FeatureReport], names: list[str] | None) -> int:
    if isinstance(feature, int) and not isinstance(feature, bool):
        index = feature
    elif names is not None and feature in names:
        index = names.index(feature)
    elif feature in [r.label for r in reports]:
        index = [r.label for r in reports].index(feature)
    elif str(feature).isdigit():
        index = int(feature)
    else:
        raise SteeringError(f"no feature labelled {feature!r}")
    if not 0 <= index < len(reports):
        raise SteeringError(f"feature {index} does not exist (features 0..{len(reports) - 1})")
    return index


def label_table(reports: Sequence[FeatureReport], limit: int | None = None) -> str:
    """A plain-text table: feature, label, source, density, effect score and flag."""
    lines = [f"{'feature':>7}  {'label':<32} {'source':<6} {'density':>8} {'effect':>8}  flag"]
    for r in list(reports)[:limit]:
        score = "-" if r.effect_score is None else f"{r.effect_score:+.3f}"
        flag = "DOES NOT HOLD" if r.flagged else ""
        lines.append(f"{r.feature:>7}  {r.label[:32]:<32} {r.source:<6} {r.density:>8.4f} "
                     f"{score:>8}  {flag}")
    return "\n".join(lines)
