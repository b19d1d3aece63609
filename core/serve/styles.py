"""Per-request steering for the server: the ``steering`` field, named styles and the styles folder.

The ``steering`` field of a request takes one of these shapes (or a list of them, which add up):

* ``"pirate"``: a named style (saved on the server, else shipped) at intensity 1.0;
* ``{"style": "pirate", "intensity": 0.8}``: a named style at an intensity;
* ``{"style": {...inline style...}, "intensity": 0.5}``: a style written inline, in the YAML
  form of :class:`polysteer.Style` (dictionaries by name only);
* ``{"features": [{"dictionary": "smollm2-res-sae", "feature": 123, "weight": 0.5}],
  "intensity": 1.0}``: features of dictionaries (index or label; ``weight`` defaults to 1.0,
  ``intervention`` to ``add``).

``style`` and ``features`` may be given together (they add). Each part is scaled by its
``intensity``; ``|intensity|`` and ``|intensity x weight|`` must stay within the server's maximum.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from polysteer.errors import ConfigError, did_you_mean
from polysteer.io.fileio import atomic_path
from polysteer.io.paths import configs_dir, home
from polysteer.serve.errors import APIError, bad_request
from polysteer.steering.style import Style

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A style or dictionary name a request may use: no path separators, no leading dot."""


def default_styles_dir() -> Path:
    """Where ``polysteer serve`` saves named styles: ``<polysteer home>/serve/styles``."""
    return home() / "serve" / "styles"


def check_name(name: Any, what: str, param: str) -> str:
    """``name`` if it is a valid name (letters, digits, ``_ . -``, at most 64, no leading dot)."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise bad_request(f"{what} name {name!r} is not valid: use letters, digits, '_', '.', '-' "
                          "(at most 64, starting with a letter or digit)", param, "invalid_name")
    return name


@dataclass(frozen=True)
class Term:
    """One steering term of a request: a style and the intensity it is applied at."""

    style: Style
    intensity: float
    label: str
    strict: bool = True
    """A strict term must apply to the served model whole (a request's own steering); remembered
    preferences are not strict: what does not apply to this model is left out."""


class StyleStore:
    """Named styles: the server's own folder (saved atomically, YAML) over the shipped styles.

    Loaded styles are cached by file modification time, so requests naming the same style share
    one :class:`Style` object (and the batcher one steering term for all their rows).
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_styles_dir()
        self._cache: dict[Path, tuple[int, Style]] = {}
        self._lock = threading.Lock()

    def _shipped(self) -> Path:
        return configs_dir() / "style"

    def path(self, name: str) -> Path | None:
        """The file of style ``name`` (the server's own first), or None."""
        for folder in (self.folder, self._shipped()):
            candidate = folder / f"{name}.yaml"
            if candidate.is_file():
                return candidate
        return None

    def names(self) -> list[dict[str, str]]:
        """Every style, ``{"name", "source", "description"}``; saved ones hide shipped namesakes."""
        seen: dict[str, dict[str, str]] = {}
        for source, folder in (("saved", self.folder), ("shipped", self._shipped())):
            for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
                if path.stem in seen or not NAME.match(path.stem):
                    continue
                try:
                    description = self.load(path.stem).description
                except (ConfigError, OSError, APIError):
                    description = "(unreadable)"
                seen[path.stem] = {"name": path.stem, "source": source, "description": description}
        return sorted(seen.values(), key=lambda s: s["name"])

    def load(self, name: str, param: str = "name") -> Style:
        """The style called ``name``; a 404 naming close names when there is none."""
        check_name(name, "style", param)
        path = self.path(name)
        if path is None:
            known = [s["name"] for s in self.names()]
            raise APIError(404, f"no style named {name!r}.{did_you_mean(name, known)} "
                                "GET /v1/styles lists them", code="style_not_found", param=param)
        mtime = path.stat().st_mtime_ns
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == mtime:
                return cached[1]
        style = Style.load(path)
        with self._lock:
            self._cache[path] = (mtime, style)
        return style

    def save(self, name: str, style: Style) -> Path:
        """Save ``style`` as ``name`` in the server's folder, atomically."""
        check_name(name, "style", "name")
        data = style.to_dict()
        data["name"] = name
        path = self.folder / f"{name}.yaml"
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def delete(self, name: str) -> None:
        """Delete a saved style; shipped styles cannot be deleted."""
        check_name(name, "style", "name")
        path = self.folder / f"{name}.yaml"
        if not path.is_file():
            if (self._shipped() / f"{name}.yaml").is_file():
                raise bad_request(f"style {name!r} is shipped with polysteer and cannot be deleted",
                                  "name", "shipped_style")
            raise APIError(404, f"no saved style named {name!r}", code="style_not_found",
                           param="name")
        path.unlink()
        with self._lock:
            self._cache.pop(path, None)


# -- parsing the request field ------------------------------------------------------------------
def _number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value \
            or value in (float("inf"), float("-inf")):
        raise APIError(422, f"{param} must be a finite number, got {value!r}", code="invalid_type",
                       param=param)
    return float(value)


def _check_refs(data: Any, param: str) -> None:
    """Dictionaries and classifiers in request styles are names, never paths on the server."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("dictionary", "classifier") and value is not None:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    continue
                check_name(value, key, f"{param}.{key}")
            else:
                _check_refs(value, f"{param}.{key}")
    elif isinstance(data, list):
        for i, item in enumerate(data):
            _check_refs(item, f"{param}[{i}]")


def inline_style(data: Any, param: str) -> Style:
    """A style written in a request (the YAML form as JSON), dictionaries by name only."""
    if not isinstance(data, dict):
        raise APIError(422, f"{param} must be a style name or a style object", code="invalid_type",
                       param=param)
    _check_refs(data, param)
    try:
        return Style.from_dict(data)
    except ConfigError as err:
        raise bad_request(f"{param}: {err}", param, "invalid_style") from None


def _features_style(features: Any, param: str, max_intensity: float, intensity: float) -> Style:
    if not isinstance(features, list) or not features:
        raise APIError(422, f"{param} must be a non-empty list of {{dictionary, feature, weight}}",
                       code="invalid_type", param=param)
    components = []
    for i, item in enumerate(features):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise APIError(422, f"{where} must be an object {{dictionary, feature, weight}}",
                           code="invalid_type", param=where)
        unknown = set(item) - {"dictionary", "feature", "weight", "intervention"}
        if unknown:
            raise bad_request(f"{where}: unknown keys {sorted(unknown)}; use dictionary, feature, "
                              "weight, intervention", where)
        if "dictionary" not in item or "feature" not in item:
            raise bad_request(f"{where} needs 'dictionary' and 'feature'", where)
        weight = _number(item.get("weight", 1.0), f"{where}.weight")
        if abs(weight * intensity) > max_intensity:
            raise bad_request(f"{where}: weight x intensity = {weight * intensity:g} is over the "
                              f"server's maximum intensity {max_intensity:g}", f"{where}.weight",
                              "intensity_too_high")
        feature = item["feature"]
        if isinstance(feature, bool) or not isinstance(feature, int | str):
            raise APIError(422, f"{where}.feature must be an index or a label", code="invalid_type",
                           param=f"{where}.feature")
        components.append({"name": f"f{i}", "dictionary": check_name(
            item["dictionary"], "dictionary", f"{where}.dictionary"), "feature": feature,
            "weight": weight, "intervention": item.get("intervention", "add")})
    try:
        return Style.from_dict({"name": "features", "components": components})
    except ConfigError as err:
        raise bad_request(f"{param}: {err}", param, "invalid_style") from None


def parse_steering(value: Any, store: StyleStore, max_intensity: float,
                   param: str = "steering") -> list[Term]:
    """The steering terms of a request's ``steering`` field (see the module docstring)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [t for i, v in enumerate(value)
                for t in parse_steering(v, store, max_intensity, f"{param}[{i}]")]
    if isinstance(value, str):
        value = {"style": value}
    if not isinstance(value, dict):
        raise APIError(422, f"{param} must be a style name, an object or a list of them",
                       code="invalid_type", param=param)
    unknown = set(value) - {"style", "features", "intensity"}
    if unknown:
        raise bad_request(f"{param}: unknown keys {sorted(unknown)}; use style, features, intensity",
                          param)
    if "style" not in value and "features" not in value:
        raise bad_request(f"{param} needs 'style' or 'features'", param)
    intensity = _number(value.get("intensity", 1.0), f"{param}.intensity")
    if abs(intensity) > max_intensity:
        raise bad_request(f"{param}.intensity {intensity:g} is over the server's maximum "
                          f"{max_intensity:g}", f"{param}.intensity", "intensity_too_high")
    terms = []
    style = value.get("style")
    if isinstance(style, str):
        terms.append(Term(store.load(style, f"{param}.style"), intensity, style))
    elif style is not None:
        s = inline_style(style, f"{param}.style")
        terms.append(Term(s, intensity, s.name))
    if "features" in value:
        s = _features_style(value["features"], f"{param}.features", max_intensity, intensity)
        terms.append(Term(s, intensity, "features"))
    return terms
