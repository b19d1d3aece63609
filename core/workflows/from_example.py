"""A style from reference examples: "texts like these", "this picture", "a voice like this WAV".

:func:`style_from_example` finds the dictionary features that set the examples apart from neutral
ones and writes a style whose weights a person can read and edit.

* **Read-out path** (models whose examples can be rendered through the model: text, images).
  The candidates are the features the shipped styles use on this model (each feature with the
  weight its style gives it: the intensity its concept measured as full strength). The examples and
  the neutral inputs are harvested at the candidates' sites (the plugin's renderer and row
  selector, see :data:`READERS`); each feature's read-out (value over its typical scale) is averaged
  per input. A feature is kept when the examples' mean read-out is at least ``min_effect`` neutral
  standard deviations away from the neutral mean; the ``top`` strongest are kept. Its weight is the
  gap in units of the feature's scale (the distance between the concept's positive and negative
  examples for a difference-of-means concept), clipped to [-1, 1], times the style's weight.
* **Measured path** (a model whose adapter has ``style_from_example``: the voice, where an example
  is audio that the model cannot read). The adapter measures the example against neutral
  generations and weights its probe features (see :mod:`polysteer.plugins.voice.from_example`).

Every kept feature is recorded with its evidence in ``style.description`` and in the returned
style's :attr:`evidence` (``Style.evidence`` is a plain attribute set here, not serialised).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polysteer.errors import ConfigError
from polysteer.features.dictionary import FeatureDictionary, resolve_dictionary
from polysteer.plugin.manager import current_plugin_manager
from polysteer.steering.style import Component, Style, load_style
from polysteer.workflows.concept_builder import batched

READERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "text": ("text", "text-tokens", {}),
    "image": ("image-noised", "image-pooled", {"steps": 10, "window": (0.0, 0.5), "seed": 0}),
}
"""Modality -> (renderer, row selector, renderer options) used to read examples through a model."""

NEUTRAL_TEXTS: tuple[str, ...] = (
    "The museum opens at nine and closes at five, except on public holidays.",
    "To reset the router, hold the small button on the back for ten seconds.",
    "The recipe needs two eggs, a cup of flour and a pinch of salt.",
    "Our office moved to the third floor of the building next to the station.",
    "The river flows north through the valley before it reaches the sea.",
    "Please bring your passport and a printed copy of the booking.",
    "The report lists the number of visitors per month for the last two years.",
    "The train to the airport leaves every twenty minutes from platform four.",
)
"""Default neutral texts: plain, informative statements with no particular mood or register."""


@dataclass
class Candidate:
    """A feature a shipped style uses on this model, with the weight that style gives it."""

    dictionary: Any  # a name or path (str), or a loaded dictionary
    feature: str
    weight: float
    style: str
    loaded: FeatureDictionary


def _shipped_styles() -> list[Style]:
    from polysteer.io.paths import configs_dir

    styles = []
    for path in sorted((configs_dir() / "style").glob("*.yaml")):
        try:
            styles.append(load_style(path))
        except (ConfigError, OSError):  # a broken shipped style is not this function's business
            continue
    return styles


def candidate_features(adapter: Any, plugins: Any = None, styles: Sequence[Style] | None = None
                       ) -> list[Candidate]:
    """The ``add`` features of ``styles`` (default: every shipped style; plain components and this
    modality's concept realisations) whose dictionary was made on ``adapter``'s model, first style
    wins."""
    found: dict[tuple[str, str], Candidate] = {}
    for style in _shipped_styles() if styles is None else styles:
        refs = [(c.dictionary, c.feature, c.weight) for c in style.components
                if c.concept is None and c.intervention == "add" and c.enabled]
        for realisations in style.concepts.values():
            real = realisations.get(adapter.modality)
            if real is not None and (real.intervention or "add") == "add":
                refs.insert(0, (real.dictionary, real.feature, real.weight))
        for ref, feature, weight in refs:
            key = (ref if isinstance(ref, str) else str(id(ref)), str(feature))
            if key in found:
                continue
            try:
                dictionary = resolve_dictionary(ref, style.base_dir, plugins)
            except (FileNotFoundError, ConfigError):
                continue
            fingerprint = dictionary.info.model
            if fingerprint is None or adapter.model_fingerprint is None or \
                    not fingerprint.matches(adapter.model_fingerprint):
                continue
            found[key] = Candidate(ref, str(feature), float(weight), style.name, dictionary)
    return list(found.values())


def _readouts(adapter: Any, inputs: Sequence[Any], candidates: list[Candidate], plugins: Any
              ) -> dict[tuple[str, str], torch.Tensor]:
    """Per candidate, each input's mean read-out ``(inputs,)`` in units of the feature's scale."""
    from polysteer.workflows.harvesting import collect, renderer, row_selector

    render, rows, options = READERS[adapter.modality]
    sites = sorted({c.loaded.info.site for c in candidates})
    got = collect(adapter, batched(list(inputs), 8), sites, renderer=renderer(render, plugins, **options),
                  rows=row_selector(rows, plugins), total_items=len(inputs), progress=len(inputs) > 8,
                  desc="reading examples")
    out = {}
    for c in candidates:
        index = c.loaded.feature_index(c.feature)
        scale = float(c.loaded.scales[index]) or 1.0
        per_input = got.per_example(c.loaded.info.site)
        values = [c.loaded.encode(r.to(c.loaded.directions.dtype))[:, index].mean() / scale
                  if len(r) else torch.tensor(math.nan) for r in per_input]
        out[(id(c), c.feature)] = torch.stack(values).float()
    return out


def style_from_example(model: Any, examples: Sequence[Any], neutral: Sequence[Any] | None = None, *,
                       top: int = 3, min_effect: float = 1.0, min_gap: float = 0.25,
                       name: str = "from-example",
                       styles: Sequence[Style] | None = None, plugins: Any = None) -> Style:
    """A style that makes ``model``'s output more like ``examples`` (vs ``neutral`` ones).

    ``model`` is an adapter or a model name. ``examples``: texts for a text model, images
    (``(3, H, W)`` tensors in [0, 1], or PNG paths) for an image model, WAV paths or waveforms for a
    voice. ``neutral`` defaults to :data:`NEUTRAL_TEXTS` for text, the model's own unconditional
    outputs for images and the voice's plain speech. See the module docstring for how features are
    chosen; ``styles`` are the styles whose features are candidates (default: every shipped
    style). Raises :class:`~polysteer.errors.ConfigError` when no feature stands out.
    """
    from polysteer.models.loading import load_model

    adapter = load_model(model, plugins=plugins) if isinstance(model, str | dict) else model
    if not examples:
        raise ConfigError("style_from_example needs at least one example")
    own = getattr(adapter, "style_from_example", None)
    if callable(own):
        return own(examples, neutral, name=name)
    if adapter.modality not in READERS:
        raise ConfigError(f"style_from_example cannot read {adapter.modality} examples through "
                          f"{adapter.name}: supported are {sorted(READERS)} and models whose "
                          "adapter has style_from_example")
    plugins = plugins or current_plugin_manager()
    loader = getattr(adapter, "load_examples", None)
    examples = loader(examples) if callable(loader) else list(examples)
    if neutral is None:
        neutral = _default_neutral(adapter)
    elif callable(loader):
        neutral = loader(neutral)
    candidates = candidate_features(adapter, plugins, styles)
    if not candidates:
        raise ConfigError(f"no shipped style has a feature made on {adapter.name}; build concepts "
                          "for it first (polysteer concept build)")
    ex = _readouts(adapter, examples, candidates, plugins)
    neu = _readouts(adapter, list(neutral), candidates, plugins)
    scored = []
    for c in candidates:
        e, n = ex[(id(c), c.feature)], neu[(id(c), c.feature)]
        e, n = e[~e.isnan()], n[~n.isnan()]
        if not len(e) or len(n) < 2:
            continue
        gap = float(e.mean() - n.mean())
        effect = gap / (float(n.std()) + 1e-6)
        scored.append((abs(effect), effect, gap, c))
    # significant (|effect| >= min_effect), then the largest gap in units of the feature's scale
    scored.sort(key=lambda s: abs(s[2]), reverse=True)
    kept = [s for s in scored if s[0] >= min_effect and abs(s[2]) >= min_gap][:top]
    if not kept:
        best = ", ".join(f"{c.feature} {e:+.2f}" for _, e, _, c in sorted(scored, key=lambda s: -s[0])[:3])
        raise ConfigError(f"no feature sets the examples apart from the neutral ones (strongest "
                          f"effects, in neutral standard deviations: {best}; the threshold is "
                          f"{min_effect}, and {min_gap} x the feature's scale): give more or "
                          "more distinct examples, or lower min_effect")
    components, evidence = [], []
    for _, effect, gap, c in kept:
        weight = round(c.weight * max(-1.0, min(1.0, gap)), 4)
        components.append(Component(name=c.feature, dictionary=c.dictionary, feature=c.feature,
                                     weight=weight))
        evidence.append({"feature": c.feature, "dictionary": c.dictionary, "style": c.style,
                         "effect": round(effect, 3), "gap": round(gap, 3),
                         "style_weight": c.weight, "weight": weight})
    description = (f"from {len(examples)} example(s) vs {len(neutral)} neutral on {adapter.name}: " +
                   "; ".join(f"{e['feature']} (examples {e['effect']:+.2f} neutral SDs, "
                             f"{e['gap']:+.2f} x its scale; weight = {e['style_weight']} from style "
                             f"{e['style']} x the gap clipped to [-1, 1])" for e in evidence))
    style = Style(name=name, components=components, description=description)
    style.evidence = evidence  # type: ignore[attr-defined]
    return style


def _default_neutral(adapter: Any) -> list[Any]:
    if adapter.modality == "text":
        return list(NEUTRAL_TEXTS)
    if adapter.modality == "image":
        return list(adapter.generate(8, seed=12345).outputs)
    raise ConfigError(f"give neutral examples for a {adapter.modality} model")


def save_style_from_example(style: Style, path: str | Path) -> Path:
    """Save ``style`` with its evidence as YAML comments above it (atomically)."""
    import yaml

    from polysteer.io.fileio import atomic_path

    lines = ["# Written by polysteer style from-example: each component is a feature that sets the",
             "# examples apart from neutral ones. Edit the weights freely (1.0 x a weight is the",
             "# strength its own style calls full; negative weights steer away)."]
    for e in getattr(style, "evidence", []):
        lines.append(f"#   {e['feature']}: examples {e['effect']:+.2f} neutral SDs away, gap "
                     f"{e['gap']:+.2f} x scale -> weight {e['weight']}")
    text = "\n".join(lines) + "\n" + yaml.safe_dump(style.to_dict(), sort_keys=False, width=100)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
