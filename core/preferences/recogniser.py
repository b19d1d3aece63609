"""Recognise preferences stated in a user message from the model's own feature read-outs.

A :class:`FeatureRecogniser` is a folder::

    recogniser.json          which preferences, their classifiers and thresholds, how texts are read,
                             the held-out precision/recall it was shipped with
    detector/                "this message states a preference" vs an ordinary request
    <preference>/            one per preference, fitted on preference statements only: "states P"
                             vs "states another preference"
    polarity/                over preference statements: "turns it off" vs "asks for it"

(each a ``classifier.json`` + ``classifier.safetensors`` folder). A message states a preference
when the detector's probability reaches its threshold; which one is the preference classifier with
the highest score; on or off is the polarity classifier's call.

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
from polysteer.io import read_folder, read_json, read_meta, write_folder, write_json
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
        detector: states-a-preference vs ordinary request.
        classifiers: per preference name, its classifier (among preference statements).
        polarity: the off-vs-on classifier (positive class: off).
    """

    def __init__(self, info: dict[str, Any], detector: FeatureClassifier,
                 classifiers: dict[str, FeatureClassifier], polarity: FeatureClassifier):
        self.info, self.detector = info, detector
        self.classifiers, self.polarity = classifiers, polarity
        sites = {c.site for c in self._all()}
        if len(sites) != 1:
            raise RecogniserError(f"a recogniser's classifiers must read one site, got {sorted(sites)}")
        self.site = sites.pop()

    def _all(self) -> list[FeatureClassifier]:
        return [self.detector, *self.classifiers.values(), self.polarity]

    @property
    def name(self) -> str:
        return str(self.info.get("name", "recogniser"))

    @property
    def preferences(self) -> list[str]:
        """The preference names it recognises (each a shipped style name)."""
        return list(self.classifiers)

    # -- reading ------------------------------------------------------------------------------------
    def activations(self, texts: Sequence[str], model: Any, *, progress: bool = False
                    ) -> list[torch.Tensor]:
        """Per text, its ``(positions, channels)`` activations at the recogniser's site, sinks
        dropped, read the way the classifiers were fitted."""
        reader = self.info.get("reader", {})
        for clf in self._all():
            clf.check_compatible(getattr(model, "model_fingerprint", None), self.site,
                                 model.bind(self.site).channels)
        got = collect(model, batched(list(texts), int(reader.get("batch_size", 16))), [self.site],
                      renderer=renderer(reader.get("renderer", "text"), **reader.get("renderer_options", {
                          "max_tokens": 128, "padding_side": "right"})),
                      rows=row_selector(reader.get("rows", "text-tokens"), **reader.get("rows_options", {
                          "skip_first": False, "outlier_factor": None})),
                      progress=progress, total_items=len(texts), desc="reading messages")
        norm = self.detector.site_norm
        return [a[a.norm(dim=-1) <= OUTLIER_FACTOR * norm] for a in got.per_example(self.site)]

    def scores(self, acts: Sequence[torch.Tensor]) -> dict[str, Any]:
        """``{"detector": P(states a preference), "which": {name: logit}, "off": P(turns it off)}``
        per example (tensors of length ``len(acts)``)."""
        cache: dict[tuple[int, tuple[str, ...]], torch.Tensor] = {}

        def logits(clf: FeatureClassifier) -> torch.Tensor:
            key = (id(clf.dictionary), clf.pools)
            if key not in cache:  # one encode serves every classifier on the same dictionary
                cache[key] = pooled_features(acts, clf.dictionary, clf.pools)
            return clf.logits_from_pooled(cache[key])

        return {"detector": torch.sigmoid(logits(self.detector)),
                "which": {name: logits(clf) for name, clf in self.classifiers.items()},
                "off": torch.sigmoid(logits(self.polarity))}

    def decide(self, scores: dict[str, Any]) -> list[list[Recognised]]:
        """Per example: nothing, or the most likely preference, on or off."""
        names = list(scores["which"])
        which = torch.stack([scores["which"][n] for n in names], 1)
        detect_at = float(self.info["detector"].get("threshold", 0.5))
        off_at = float(self.info["polarity"].get("threshold", 0.5))
        out: list[list[Recognised]] = []
        for i, p in enumerate(scores["detector"].tolist()):
            if p < detect_at:
                out.append([])
                continue
            name = names[int(which[i].argmax())]
            out.append([Recognised(name, on=bool(scores["off"][i] < off_at), probability=round(p, 4))])
        return out

    def recognise(self, texts: Sequence[str], model: Any) -> list[list[Recognised]]:
        """Per text, the preferences it states, read through ``model``."""
        if not len(texts):
            return []
        return self.decide(self.scores(self.activations(texts, model)))

    # -- files --------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder (``recogniser.json`` and one classifier folder per preference), staged
        and published atomically (a concurrent :func:`load_recogniser` sees the old or the new one)."""

        def write(tmp: Path) -> None:
            self.detector.save(tmp / "detector")
            for name, clf in self.classifiers.items():
                clf.save(tmp / name)
            self.polarity.save(tmp / "polarity")
            write_json(tmp / RECOGNISER_FILE, self.info)

        return write_folder(Path(path), write)


def load_recogniser(path: str | os.PathLike, plugins: Any = None) -> FeatureRecogniser:
    """Load a recogniser folder (its classifiers' dictionaries are resolved by name and digest).

    Every file is read from one version of the folder (:func:`polysteer.io.read_folder`), so a
    recogniser rebuilt meanwhile never mixes in."""
    path = Path(path)
    try:
        return read_folder(path, lambda real: _load_recogniser_files(real, path, plugins))
    except FileNotFoundError as err:  # no such folder, or a part missing: the message says which
        raise RecogniserError(str(err)) from None


def _load_recogniser_files(real: Path, path: Path, plugins: Any) -> FeatureRecogniser:
    info = read_meta(real, RECOGNISER_FILE, FORMAT, FORMAT_VERSION,
                     "rebuild one with scripts/build_preferences.py", shown=path,
                     what="polysteer preference recogniser")
    try:
        classifiers = {name: load_classifier(real / entry.get("classifier", name), plugins)
                       for name, entry in info["preferences"].items()}
        detector = load_classifier(real / info["detector"].get("classifier", "detector"), plugins)
        polarity = load_classifier(real / info["polarity"].get("classifier", "polarity"), plugins)
    except (KeyError, TypeError, AttributeError) as err:
        raise CorruptFileError(f"{path / RECOGNISER_FILE}: {type(err).__name__}: {err}; the file is "
                               "damaged: rebuild it with scripts/build_preferences.py") from None
    return FeatureRecogniser(info, detector, classifiers, polarity)


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
