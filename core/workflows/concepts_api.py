"""``ps.concept``: a concept from two lists of examples, in one call, at a measured default site.

::

    c = ps.concept(model, positive=["What a lovely day!", ...], negative=["What a dreadful day.", ...],
                   name="cheerful")
    c.save("cheerful")                          # a direction set, tied to the model
    style = ps.Style.from_concept(c)            # weight = the concept's recommended intensity
    with ps.steer(model, style):
        ...

The concept is built by the one concept builder (:func:`polysteer.workflows.build_concept` with a
:class:`~polysteer.workflows.ConceptRecipe`: difference of means over the examples' tokens/rows,
the renderer and row selector the model's modality registered). Without ``site=`` it lives at the
site :func:`default_concept_site` picks for the model:

1. the model's entry in the shipped table ``core/shipped/concept_sites.json`` (measured with
   ``benchmarks/concept_sites.py``: the layer whose ``resid_post`` best trades concept effect for
   coherence over the shipped concepts, see docs/api.md), matched by the model's architecture
   fingerprint or name;
2. otherwise, for a model with ``blocks.N.resid_post`` sites, the layer at the table's
   ``relative_depth`` (the measured best layer / the number of layers on SmolLM2), rounded;
3. otherwise an error asking for ``site=``.

The recommended intensity (``intensity=``, else the table's entry for the model, else its
``default_intensity``) is stored in ``details["recommended_intensity"]``; :meth:`Style.from_concept`
and :func:`recommended_intensity` read it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from polysteer.errors import ConfigError
from polysteer.features.dictionary import DirectionSet, FeatureDictionary
from polysteer.workflows.concept_builder import ConceptRecipe, build_concept

TABLE = Path(__file__).resolve().parent.parent / "shipped" / "concept_sites.json"
_BLOCK = re.compile(r"^blocks\.(\d+)\.resid_post$")

RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "text": {"renderer": "text", "rows": "text-tokens"},
}
"""Per modality: the registered renderer and row selector ``ps.concept`` harvests with, as the
text plugin's concept specs use them. Other modalities pass ``renderer=`` and ``rows=`` (see their
plugins' concept builders, e.g. ``image`` + ``image-pooled`` for avatar conditions)."""


@cache
def concept_site_table() -> dict[str, Any]:
    """The shipped table of measured default concept sites (see the module docs)."""
    return json.loads(TABLE.read_text())


def _entry(adapter: Any) -> dict[str, Any] | None:
    fp = getattr(adapter, "model_fingerprint", None)
    for entry in concept_site_table()["models"]:
        if fp is not None and entry.get("architecture") == fp.architecture:
            return entry
    names = {getattr(adapter, "name", None), getattr(fp, "name", None)}
    for entry in concept_site_table()["models"]:
        if entry.get("name") in names:
            return entry
    return None


def default_concept_site(adapter: Any) -> tuple[str, str]:
    """``(site, why)``: where ``ps.concept`` builds a concept on ``adapter``'s model by default."""
    table = concept_site_table()
    sites = list(adapter.sites())
    entry = _entry(adapter)
    if entry is not None and entry["site"] in sites:
        return entry["site"], f"measured for {entry['name']} ({entry['source']})"
    blocks = sorted(int(m.group(1)) for s in sites if (m := _BLOCK.match(s)))
    if blocks:
        depth = table["rule"]["relative_depth"]
        layer = min(blocks, key=lambda n: abs(n - depth * (blocks[-1] + 1)))
        return (f"blocks.{layer}.resid_post",
                f"rule for unmeasured models: layer nearest {depth} x {blocks[-1] + 1} layers "
                f"({table['rule']['source']})")
    raise ConfigError(f"no default concept site for {getattr(adapter, 'name', adapter)!r} "
                      f"({adapter.modality}); pass site=... (one of `polysteer sites MODEL`)")


def recommended_intensity(dictionary: FeatureDictionary) -> float | None:
    """The recommended intensity stored in a concept's metadata, or ``None``."""
    value = dictionary.info.details.get("recommended_intensity")
    return None if value is None else float(value)


def concept(model: Any, positive: Sequence[Any], negative: Sequence[Any], *, site: str | None = None,
            name: str = "concept", intensity: float | None = None, method: str = "mean-diff",
            renderer: str | None = None, rows: str | None = None, batch_size: int = 8,
            progress: bool = False, plugins: Any = None, **recipe: Any) -> DirectionSet:
    """Build a one-feature concept (a savable :class:`DirectionSet`) from contrastive examples.

    Args:
        model: a loaded model (``ps.load_model(...)``).
        positive, negative: examples with and without the concept (texts for a text model; what
            the modality's renderer renders otherwise); ``method="pca"`` wants them paired.
        site: where to build it; default :func:`default_concept_site` (measured per model).
        name: the feature's label (and the component name in :meth:`Style.from_concept`).
        intensity: recommended intensity stored with it; default: measured for the model.
        method: ``mean-diff`` or ``pca``.
        renderer, rows: registered renderer / row selector; default: the modality's.
        recipe: any other :class:`~polysteer.workflows.ConceptRecipe` field.
    """
    positive, negative = list(positive), list(negative)
    if not positive or not negative:
        raise ConfigError("ps.concept needs at least one positive and one negative example")
    if method not in ("mean-diff", "pca"):
        raise ConfigError(f"method {method!r}: ps.concept builds 'mean-diff' or 'pca' concepts "
                          "(probes: use ps.build_concept with a ConceptRecipe)")
    why = "given"
    if site is None:
        site, why = default_concept_site(model)
    elif site not in model.sites():
        model.bind(site)  # raises UnknownSiteError with suggestions
    if intensity is None:
        entry = _entry(model)
        intensity = float(entry["intensity"] if entry else concept_site_table()["default_intensity"])
    defaults = dict(RECIPE_DEFAULTS.get(model.modality, {}))
    if renderer is not None:
        defaults["renderer"] = renderer
    if rows is not None:
        defaults["rows"] = rows
    if "renderer" not in defaults:
        raise ConfigError(f"no default renderer for {model.modality} models; pass renderer=... and "
                          "rows=... (a registered renderer and row selector, see `polysteer plugins`)")
    details = {**recipe.pop("details", {}), "recommended_intensity": float(intensity),
               "site_choice": why, "examples": len(positive) + len(negative)}
    try:
        c = build_concept(model, ConceptRecipe(name=name, site=site, method=method, positive=positive,
                                               negative=negative, batch_size=batch_size,
                                               details=details, **{**defaults, **recipe}),
                          plugins=plugins, progress=progress)
    except ValueError as err:
        raise ConfigError(f"concept {name!r}: {err}") from None
    return c
