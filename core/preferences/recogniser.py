"""Recognise preferences stated in a user message from the model's own feature read-outs.

A :class:`FeatureRecogniser` is a folder::

    recogniser.json          which preferences, their classifiers and thresholds, how texts are read,
                             the held-out precision/recall it was shipped with
    <preference>/            one sparse feature classifier per preference (``classifier.json`` +
                             ``classifier.safetensors``): "this message states preference P" vs
                             everything else (other preferences and ordinary requests)
    polarity/                one classifier over preference statements: "turns it off" vs "asks for it"

Each classifier is a :class:`~polysteer.features.FeatureClassifier`: an L1 logistic read-out of
pooled sparse-autoencoder features at one site (on SmolLM2, the shipped ``smollm2-res-sae`` at
``blocks.12.resid_post``). A message is read once through the model (renderer and row selector named
in ``recogniser.json``, so the code is modality-agnostic); every classifier scores the same pooled
features. Recognition is therefore what the model's features say about the message, not keyword
matching: "write a poem about briefness" and "please be brief" share a word but not a decision.

The shipped SmolLM2 recogniser is rebuilt by ``scripts/build_preferences.py`` from the labelled
statements ``statements.json`` next to it; rows marked ``"split": "test"`` are never used for
fitting, and their precision/recall is in ``recogniser.json`` and docs/preferences.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from polysteer.errors import CorruptFileError, PolysteerError
from polysteer.features import (
    OUTLIER_FACTOR,
    FeatureClassifier,
    load_classifier,
    pooled_features,
)
from polysteer.io import read_json, write_json
from polysteer.workflows import batched, collect, renderer, row_selector

FORMAT = "polysteer-preference-recogniser"
FORMAT_VERSION = 1
RECOGNISER_FILE = "recogniser.json"
SHIPPED_KIND = "preferences"
"""Shipped-folder kind: plugins ship recognisers in ``<shipped>/preferences/<name>/``."""


class RecogniserError(PolysteerError, ValueError):
    """A recogniser that cannot be found or does not fit the model (the message says the fix)."""


@dataclass(frozen=True)
class Recognised:
    """One preference a message states: ``on`` (asks for it) or not (turns it off)."""

    name: str
    on: bool = True
    probability: float = 1.0
    """How sure the recogniser is that the message states this preference."""
    strength: float = 1.0
    """How strongly it is asked for, in [0, 1] (1: fully)."""


@runtime_checkable
class Recogniser(Protocol):
    """Anything that turns messages into the preferences they state (the store takes any)."""

    def recognise(self, texts: Sequence[str], model: Any) -> list[list[Recognised]]:
        """Per text, the preferences it states (empty for an ordinary request)."""
        ...


class FeatureRecogniser:
    """Preference classifiers on one model's pooled dictionary features; see the module docstring.

    Attributes:
        info: the ``recogniser.json`` content.
        classifiers: per preference name, its classifier.
        polarity: the off-vs-on classifier (positive class: off).
    """

    def __init__(self, info: dict[str, Any], classifiers: dict[str, FeatureClassifier],
                 polarity: FeatureClassifier):
        self.info, self.classifiers, self.polarity = info, classifiers, polarity
        sites = {c.site for c in [*classifiers.values(), polarity]}
        if len(sites) != 1:
            raise RecogniserError(f"a recogniser's classifiers must read one site, got {sorted(sites)}")
        self.site = sites.pop()
        dictionaries = {id(c.dictionary) for c in [*classifiers.values(), polarity]}
        self._shared = len(dictionaries) == 1  # one encode serves every classifier

    @property
    def name(self) -> str:
        return str(self.info.get("name", "recogniser"))

    @property
    def preferences(self) -> list[str]:
        """The preference names it recognises (each a shipped style name)."""
        return list(self.classifiers)

    def threshold(self, name: str) -> float:
        return float(self.info["preferences"][name].get("threshold", 0.5))

    # -- reading ------------------------------------------------------------------------------------
    def activations(self, texts: Sequence[str], model: Any, *, progress: bool = False
                    ) -> list[torch.Tensor]:
        """Per text, its ``(positions, channels)`` activations at the recogniser's site, sinks
        dropped, read the way the classifiers were fitted."""
        reader = self.info.get("reader", {})
        for clf in [*self.classifiers.values(), self.polarity]:
            clf.check_compatible(getattr(model, "model_fingerprint", None), self.site,
                                 model.bind(self.site).channels)
        got = collect(model, batched(list(texts), int(reader.get("batch_size", 16))), [self.site],
                      renderer=renderer(reader.get("renderer", "text"), **reader.get("renderer_options", {
                          "max_tokens": 128, "padding_side": "right"})),
                      rows=row_selector(reader.get("rows", "text-tokens"), **reader.get("rows_options", {
                          "skip_first": False, "outlier_factor": None})),
                      progress=progress, total_items=len(texts), desc="reading messages")
        norm = self.polarity.site_norm
        return [a[a.norm(dim=-1) <= OUTLIER_FACTOR * norm] for a in got.per_example(self.site)]

    def scores(self, acts: Sequence[torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(per preference P(states it), P(turns it off)) for each example's activations."""
        def pooled(clf: FeatureClassifier) -> torch.Tensor:
            return pooled_features(acts, clf.dictionary, clf.pools)

        shared = pooled(self.polarity) if self._shared else None
        probs = {}
        for name, clf in self.classifiers.items():
            x = shared if shared is not None and clf.pools == self.polarity.pools else pooled(clf)
            probs[name] = torch.sigmoid(clf.logits_from_pooled(x))
        x = shared if shared is not None else pooled(self.polarity)
        return probs, torch.sigmoid(self.polarity.logits_from_pooled(x))

    def decide(self, probs: dict[str, torch.Tensor], off: torch.Tensor) -> list[list[Recognised]]:
        """Per example, the preferences whose probability reaches their threshold."""
        out: list[list[Recognised]] = []
        for i in range(len(off)):
            is_off = bool(off[i] >= float(self.info["polarity"].get("threshold", 0.5)))
            found = [Recognised(name, on=not is_off, probability=round(float(p[i]), 4))
                     for name, p in probs.items() if p[i] >= self.threshold(name)]
            out.append(sorted(found, key=lambda r: -r.probability))
        return out

    def recognise(self, texts: Sequence[str], model: Any) -> list[list[Recognised]]:
        """Per text, the preferences it states (most probable first), read through ``model``."""
        if not len(texts):
            return []
        probs, off = self.scores(self.activations(texts, model))
        return self.decide(probs, off)

    # -- files --------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder (``recogniser.json`` and one classifier folder per preference)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, clf in self.classifiers.items():
            clf.save(path / name)
        self.polarity.save(path / "polarity")
        write_json(path / RECOGNISER_FILE, self.info)
        return path


def load_recogniser(path: str | os.PathLike, plugins: Any = None) -> FeatureRecogniser:
    """Load a recogniser folder (its classifiers' dictionaries are resolved by name and digest)."""
    path = Path(path)
    meta = path / RECOGNISER_FILE
    if not meta.is_file():
        raise RecogniserError(f"{path} is not a preference recogniser folder (no {RECOGNISER_FILE}); "
                              "rebuild one with scripts/build_preferences.py")
    info = read_json(meta)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CorruptFileError(f"{meta} is not a polysteer preference recogniser (format {FORMAT!r})")
    if int(info.get("version", 0)) > FORMAT_VERSION:
        raise CorruptFileError(f"{meta} has format version {info.get('version')}, this polysteer reads "
                               f"up to {FORMAT_VERSION}: upgrade polysteer")
    classifiers = {name: load_classifier(path / entry.get("classifier", name), plugins)
                   for name, entry in info["preferences"].items()}
    polarity = load_classifier(path / info["polarity"].get("classifier", "polarity"), plugins)
    return FeatureRecogniser(info, classifiers, polarity)


def recogniser_search_path() -> list[Path]:
    """Folders a recogniser name is looked up in: ``<home>/preferences``, then shipped folders."""
    from polysteer.io import home
    from polysteer.plugin import current_plugin_manager

    return [home() / SHIPPED_KIND, *current_plugin_manager().shipped_folders(SHIPPED_KIND)]


def find_recogniser(model: Any = None, name: str | os.PathLike | None = None) -> FeatureRecogniser:
    """A recogniser by folder path or name, or (``name=None``) the first found whose classifiers
    fit ``model``'s fingerprint."""
    if name is not None and Path(name).is_dir():
        return load_recogniser(name)
    candidates = []
    for folder in recogniser_search_path():
        if name is not None:
            if (folder / str(name) / RECOGNISER_FILE).is_file():
                return load_recogniser(folder / str(name))
            continue
        candidates += sorted(p.parent for p in folder.glob(f"*/{RECOGNISER_FILE}"))
    fingerprint = getattr(model, "model_fingerprint", None)
    for folder in candidates:
        info = read_json(folder / RECOGNISER_FILE)
        own = info.get("model")
        if fingerprint is None or own is None or _fingerprint_matches(own, fingerprint):
            return load_recogniser(folder)
    searched = ", ".join(str(f) for f in recogniser_search_path())
    what = f"recogniser {str(name)!r}" if name is not None else "a preference recogniser for this model"
    raise RecogniserError(f"{what} not found; looked in: {searched}. Build one with "
                          "scripts/build_preferences.py, or pass recogniser=... to PreferenceStore")


def _fingerprint_matches(data: dict[str, Any], fingerprint: Any) -> bool:
    from polysteer.features import ModelFingerprint

    return ModelFingerprint.from_json(data).matches(fingerprint)
