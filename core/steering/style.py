"""Styles: named, serialisable mixes of features with schedules and rules.

A style is a list of *components* (a feature of a dictionary, or a cross-modal *concept*, with a
weight, an intervention kind, a schedule and a position mask) plus *rules* that switch components
on or off when a feature's read-out (or a fitted classifier's score) crosses a threshold. Styles
are YAML files; they add
(``a + b``), scale (``0.5 * a``) and blend (``blend(a, b, 0.3)``). Every validation error names the
key path, e.g. ``components[1].schedule.kind``.

Example::

    name: friendly-concise
    components:
      - dictionary: dictionaries/friendly     # folder path (relative to this file) or a name
        feature: friendly
        weight: 0.7
        schedule: {kind: ramp, end: 0.3}
      - concept: concise                       # realised per modality, see ``concepts``
        weight: 0.5
    rules:
      - when: {dictionary: dictionaries/scam, feature: scam, above: 0.5}
        then: {apply: cautious, steps: 20}
      - when: {classifier: smollm2-sms-spam, above: 0.9}   # polysteer classify fit
        then: {apply: cautious}
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from polysteer.errors import ConfigError, did_you_mean
from polysteer.io.fileio import atomic_path
from polysteer.io.safeload import check_finite_tree, load_yaml, quoted_hint
from polysteer.steering.governor import Governor
from polysteer.steering.schedules import BUILTIN_ENVELOPES, BUILTIN_MASKS

DictionaryRef = Any
"""A dictionary folder path or name (str), or a loaded :class:`FeatureDictionary`."""


def _check_keys(data: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'style'}: expected a mapping, got {type(data).__name__}")
    allowed = required + optional
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{path + '.' if path else ''}{key}: unknown key.{did_you_mean(key, allowed)} "
                              f"Allowed keys are {', '.join(allowed)}")
    for key in required:
        if key not in data:
            raise ConfigError(f"{path + '.' if path else ''}{key}: missing (required)")


MAX_WEIGHT = 1000.0
"""Largest magnitude of a component or realisation weight (larger ones overflow fp16 models)."""


def _number(value: Any, path: str, limit: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: expected a number, got {value!r}{quoted_hint(value)}")
    if not math.isfinite(value):
        raise ConfigError(f"{path}: must be a finite number, got {value!r}")
    if limit is not None and abs(value) > limit:
        raise ConfigError(f"{path}: {value!r} is out of range; use a value between {-limit:g} "
                          f"and {limit:g}")
    return float(value)


def _check_builtin_spec(spec: dict[str, Any], path: str, builtins: dict[str, Any]) -> dict[str, Any]:
    """Build a built-in schedule or position mask once at load, so a bad parameter (a quoted
    number, a fraction out of [0, 1]) is refused here, naming its key path; plugin kinds are
    checked when steering starts."""
    factory = builtins.get(spec.get("kind")) if isinstance(spec.get("kind"), str) else None
    if factory is not None:
        try:
            factory(**{k: v for k, v in spec.items() if k != "kind"})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{path}: {err}") from None
    return spec


def _kind_spec(value: Any, path: str, default: str) -> dict[str, Any]:
    """``"ramp"`` or ``{kind: ramp, end: 0.3}`` -> ``{"kind": "ramp", "end": 0.3}``."""
    if value is None:
        return {"kind": default}
    if isinstance(value, str):
        return {"kind": value}
    if not isinstance(value, dict) or "kind" not in value:
        raise ConfigError(f"{path}: expected a kind name or a mapping with 'kind', got {value!r}")
    if not isinstance(value["kind"], str) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{path}: expected a kind name and named parameters, got {value!r}")
    return dict(value)


@dataclass
class Realisation:
    """How a concept is realised in one modality: a feature of a dictionary, with its own settings.

    ``weight`` multiplies the component's weight (a calibrated realisation stores here the
    intensity its modality measured as "full strength"). ``intervention`` (+ ``options``),
    ``schedule``, ``positions`` and ``branches``, when given, override the component's for this
    modality only, so an image realisation can carry a spatial region (``positions: {kind: region,
    ...}``) while the text and voice realisations of the same concept act on every position.
    ``None`` means "as the component says".
    """

    dictionary: DictionaryRef
    feature: int | str
    weight: float = 1.0
    intervention: str | None = None
    options: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    positions: dict[str, Any] | None = None
    branches: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.schedule is not None:
            self.schedule = _kind_spec(self.schedule, "realisation.schedule", "constant")
        if self.positions is not None:
            self.positions = _kind_spec(self.positions, "realisation.positions", "all")
        if isinstance(self.branches, str):
            self.branches = (self.branches,)
        elif self.branches is not None:
            self.branches = tuple(self.branches)

    def overrides(self) -> dict[str, Any]:
        """The component settings this realisation replaces, by field name."""
        return {key: getattr(self, key) for key in _REALISATION_OVERRIDES
                if getattr(self, key) is not None}


_REALISATION_OVERRIDES = ("intervention", "options", "schedule", "positions", "branches")


@dataclass
class Component:
    """One ingredient of a style.

    Either ``dictionary`` + ``feature``, or ``concept`` (looked up in the style's ``concepts``
    for the model's modality). ``weight`` multiplies the run's intensity; ``intervention`` is a
    registered kind with its ``options``; ``schedule`` an envelope spec; ``positions`` a mask spec;
    ``branches`` limits the component to rows of those branches (``cond``/``uncond`` under
    classifier-free guidance); ``enabled: false`` leaves it off until a rule applies it.
    """

    name: str
    weight: float = 1.0
    dictionary: DictionaryRef | None = None
    feature: int | str | None = None
    concept: str | None = None
    intervention: str = "add"
    options: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "constant"})
    positions: dict[str, Any] = field(default_factory=lambda: {"kind": "all"})
    branches: tuple[str, ...] | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        # accept the short forms users write in Python too: schedule="ramp", positions="generated"
        self.schedule = _kind_spec(self.schedule, f"{self.name}.schedule", "constant")
        self.positions = _kind_spec(self.positions, f"{self.name}.positions", "all")
        if isinstance(self.branches, str):
            self.branches = (self.branches,)

    def identity(self) -> tuple:
        """Components with the same identity merge when styles are added."""
        dictionary = self.dictionary if isinstance(self.dictionary, str | None) else id(
            self.dictionary)
        return (self.name, dictionary, self.feature, self.concept, self.intervention,
                repr(sorted(self.options.items())), repr(sorted(self.schedule.items())),
                repr(sorted(self.positions.items())), self.branches, self.enabled)


@dataclass
class Rule:
    """"When a read-out > ``above`` for ``for_steps`` steps, apply/stop component C for ``steps``.

    The read-out is either feature F of a dictionary (its value divided by its typical scale,
    maximised over the new positions of each row, leaving out attention sinks: tokens whose norm is
    over ten times the site's typical norm, such as the first token of most LLMs), or a fitted
    classifier's probability over every position seen so far in the generation (``classifier``,
    see :mod:`polysteer.features.classifier`). Each batch row keeps its own rule state. ``steps: null``
    holds forever. A rule fires during one step and acts from the next one.
    """

    dictionary: DictionaryRef | None
    feature: int | str | None
    above: float
    action: str  # "apply" or "stop"
    target: str  # a component name
    for_steps: int = 1
    steps: int | None = None
    name: str = ""
    classifier: Any = None  # a classifier folder path or name, or a loaded FeatureClassifier


@dataclass
class Style:
    """A named mix of components and rules; see the module docstring for the YAML form."""

    name: str = "style"
    components: list[Component] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    concepts: dict[str, dict[str, Realisation]] = field(default_factory=dict)
    description: str = ""
    base_dir: Path | None = None  # relative dictionary paths resolve against this
    governor: Governor | None = None  # the coherence governor (polysteer.steering.governor)

    @classmethod
    def from_concept(cls, concept: Any, weight: float | None = None, *, name: str | None = None,
                     feature: int | str = 0, **component: Any) -> Style:
        """A one-component style that adds ``concept`` (a dictionary object or folder path).

        ``weight`` defaults to the concept's recommended intensity
        (``info.details["recommended_intensity"]``, as ``ps.concept`` and concept specs store it),
        else 1.0; ``component`` sets other :class:`Component` fields (``schedule``, ...).
        """
        dictionary = concept
        if isinstance(concept, str | os.PathLike):
            from polysteer.features.dictionary import load_dictionary

            dictionary = load_dictionary(concept)
            concept = str(concept)
        label = dictionary.labels[feature] if isinstance(feature, int) else feature
        if weight is None:
            weight = float(dictionary.info.details.get("recommended_intensity", 1.0))
        return cls(name=name or str(label), components=[
            Component(str(label), weight=weight, dictionary=concept, feature=label, **component)])

    # -- algebra -------------------------------------------------------------------------------
    def scaled(self, factor: float) -> Style:
        """Every component's weight times ``factor``."""
        factor = _number(factor, "scale factor")
        return replace(self, components=[replace(c, weight=c.weight * factor)
                                         for c in self.components])

    def __mul__(self, factor: float) -> Style:
        return self.scaled(factor)

    __rmul__ = __mul__

    def __add__(self, other: Style) -> Style:
        """Union of components (the same component: weights add), rules and concepts.

        A component of ``other`` whose name is taken by a different component is renamed
        ``<other style>.<name>`` (and ``other``'s rules follow it), so names stay unique.
        """
        merged: dict[tuple, Component] = {c.identity(): copy.copy(c) for c in self.components}
        renamed: dict[str, str] = {}
        for comp in other.components:
            key = comp.identity()
            if key in merged:
                merged[key] = replace(merged[key], weight=merged[key].weight + comp.weight)
                continue
            taken = {c.name for c in merged.values()}
            if comp.name in taken:
                new = f"{other.name}.{comp.name}"
                while new in taken:
                    new += "'"
                renamed[comp.name] = new
                comp = replace(comp, name=new)
            merged[comp.identity()] = copy.copy(comp)
        rules = list(self.rules)
        for rule in other.rules:
            rule = replace(rule, target=renamed.get(rule.target, rule.target))
            if rule not in rules:
                rules.append(rule)
        return Style(name=f"{self.name}+{other.name}", components=list(merged.values()),
                     rules=rules, concepts={**self.concepts, **other.concepts},
                     description=self.description or other.description,
                     base_dir=self.base_dir or other.base_dir,
                     governor=self.governor or other.governor)

    # -- files ---------------------------------------------------------------------------------
    @staticmethod
    def from_dict(data: Any, base_dir: str | os.PathLike | None = None) -> Style:
        """Validate and build a style from plain data (as read from YAML)."""
        return _parse_style(data, Path(base_dir) if base_dir else None)

    @staticmethod
    def load(path: str | os.PathLike) -> Style:
        """Load a YAML style file; dictionary paths in it are relative to the file."""
        path = Path(path)
        data = load_yaml(path, "style file")  # regular UTF-8 file, alias/depth limits
        try:
            return _parse_style(data, path.parent)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML; loaded dictionaries cannot be serialised (save them first)."""
        out = {"name": self.name, "description": self.description,
               "components": [_component_to_dict(c) for c in self.components],
               "rules": [_rule_to_dict(r) for r in self.rules],
               "concepts": {name: {m: _realisation_to_dict(r) for m, r in real.items()}
                            for name, real in self.concepts.items()}}
        if self.governor is not None:
            out["governor"] = self.governor.to_dict()
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the style as YAML, atomically."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def load_style(name_or_path: str | os.PathLike) -> Style:
    """A style file, or a shipped style by name (``configs/style/<name>.yaml``)."""
    from polysteer.io.paths import configs_dir

    path = Path(name_or_path)
    if path.exists():
        return Style.load(path)
    shipped = configs_dir() / "style" / f"{name_or_path}.yaml"
    if shipped.exists():
        return Style.load(shipped)
    names = sorted(p.stem for p in (configs_dir() / "style").glob("*.yaml"))
    raise FileNotFoundError(f"style {str(name_or_path)!r} is neither a file nor a shipped style."
                            f"{did_you_mean(name_or_path, names)} Shipped styles: {', '.join(names)}")


def blend(a: Style, b: Style, t: float) -> Style:
    """``(1 - t) * a + t * b``: slide from style ``a`` (t=0) to style ``b`` (t=1)."""
    t = _number(t, "blend t")
    return (a * (1.0 - t)) + (b * t)


# -- parsing -------------------------------------------------------------------------------------
_COMPONENT_KEYS = ("name", "weight", "dictionary", "feature", "concept", "intervention", "options",
                   "schedule", "positions", "branches", "enabled")


def _parse_style(data: Any, base_dir: Path | None) -> Style:
    _check_keys(data, "", (), ("name", "description", "components", "rules", "concepts", "governor"))
    concepts = _parse_concepts(data.get("concepts") or {})
    comps_data = data.get("components") or []
    if not isinstance(comps_data, list):
        raise ConfigError("components: expected a list of components")
    components = [_parse_component(c, f"components[{i}]", concepts)
                  for i, c in enumerate(comps_data)]
    names = [c.name for c in components]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"components: names must be unique, {dupes} repeat; give each a 'name'")
    rules_data = data.get("rules") or []
    if not isinstance(rules_data, list):
        raise ConfigError("rules: expected a list of rules")
    rules = [_parse_rule(r, f"rules[{i}]", names) for i, r in enumerate(rules_data)]
    governor = Governor.parse(data["governor"] if "governor" in data else None)
    if "governor" in data and governor is None and data["governor"] is None:
        governor = Governor()  # `governor:` with nothing after it: on, with every default
    return Style(name=str(data.get("name", "style")), components=components, rules=rules,
                 concepts=concepts, description=str(data.get("description", "")),
                 base_dir=base_dir, governor=governor)


def _parse_concepts(data: Any) -> dict[str, dict[str, Realisation]]:
    if not isinstance(data, dict):
        raise ConfigError("concepts: expected a mapping of concept -> {modality: realisation}")
    out: dict[str, dict[str, Realisation]] = {}
    for name, realisations in data.items():
        if not isinstance(realisations, dict) or not realisations:
            raise ConfigError(f"concepts.{name}: expected a mapping of modality -> "
                              "{dictionary, feature}")
        out[name] = {}
        for modality, spec in realisations.items():
            out[name][modality] = _parse_realisation(spec, f"concepts.{name}.{modality}")
    return out


def _parse_realisation(spec: Any, path: str) -> Realisation:
    _check_keys(spec, path, ("dictionary", "feature"), ("weight", *_REALISATION_OVERRIDES))
    intervention = spec.get("intervention")
    if intervention is not None and not isinstance(intervention, str):
        raise ConfigError(f"{path}.intervention: expected a kind name like 'add'")
    options = spec.get("options")
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"{path}.options: expected a mapping")
    if options is not None:
        check_finite_tree(options, f"{path}.options")
    branches = _parse_branches(spec.get("branches"), path)
    schedule = spec.get("schedule")
    positions = spec.get("positions")
    return Realisation(
        spec["dictionary"], spec["feature"], _number(spec.get("weight", 1.0), f"{path}.weight", MAX_WEIGHT),
        intervention=intervention, options=dict(options) if options is not None else None,
        schedule=None if schedule is None else _kind_spec(schedule, f"{path}.schedule", "constant"),
        positions=None if positions is None else _kind_spec(positions, f"{path}.positions", "all"),
        branches=branches)


def _parse_branches(value: Any, path: str) -> tuple[str, ...] | None:
    """``cond`` or ``[cond, uncond]`` -> a tuple of branch names (``None``: every branch)."""
    if value is None:
        return None
    branches = [value] if isinstance(value, str) else value
    if not isinstance(branches, list) or not all(isinstance(b, str) for b in branches):
        raise ConfigError(f"{path}.branches: expected a list of branch names like [cond]")
    return tuple(branches)


def _realisation_to_dict(r: Realisation) -> dict[str, Any]:
    out = _ref_dict(r.dictionary, r.feature, r.weight)
    for key, value in r.overrides().items():
        out[key] = list(value) if key == "branches" else copy.deepcopy(value)
    return out


def _parse_component(data: Any, path: str, concepts: dict) -> Component:
    _check_keys(data, path, (), _COMPONENT_KEYS)
    has_feature = "dictionary" in data or "feature" in data
    if "concept" in data:
        if not isinstance(data["concept"], str):
            raise ConfigError(f"{path}.concept: expected a concept name, got {data['concept']!r}")
        if has_feature:
            raise ConfigError(f"{path}: give either 'concept' or 'dictionary' + 'feature', not both")
        if data["concept"] not in concepts:
            raise ConfigError(f"{path}.concept: {data['concept']!r} is not defined under "
                              f"'concepts' (defined: {sorted(concepts) or 'none'})")
    elif not ("dictionary" in data and "feature" in data):
        raise ConfigError(f"{path}: needs 'dictionary' and 'feature' (or 'concept')")
    branches = _parse_branches(data.get("branches"), path)
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{path}.options: expected a mapping")
    check_finite_tree(options, f"{path}.options")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{path}.enabled: expected true or false, got {enabled!r}")
    intervention = data.get("intervention", "add")
    if not isinstance(intervention, str):
        raise ConfigError(f"{path}.intervention: expected a kind name like 'add'")
    name = data.get("name") or str(data.get("concept") or data.get("feature"))
    return Component(
        name=str(name), weight=_number(data.get("weight", 1.0), f"{path}.weight", MAX_WEIGHT),
        dictionary=data.get("dictionary"), feature=data.get("feature"),
        concept=data.get("concept"), intervention=intervention, options=dict(options),
        schedule=_check_builtin_spec(_kind_spec(data.get("schedule"), f"{path}.schedule", "constant"),
                                     f"{path}.schedule", BUILTIN_ENVELOPES),
        positions=_check_builtin_spec(_kind_spec(data.get("positions"), f"{path}.positions", "all"),
                                      f"{path}.positions", BUILTIN_MASKS),
        branches=branches, enabled=enabled)


def _parse_rule(data: Any, path: str, component_names: list[str]) -> Rule:
    _check_keys(data, path, ("when", "then"), ("name",))
    when, then = data["when"], data["then"]
    if isinstance(when, dict) and "classifier" in when:
        _check_keys(when, f"{path}.when", ("classifier", "above"), ("for_steps",))
    else:
        _check_keys(when, f"{path}.when", ("dictionary", "feature", "above"), ("for_steps",))
    _check_keys(then, f"{path}.then", (), ("apply", "stop", "steps"))
    actions = [a for a in ("apply", "stop") if a in then]
    if len(actions) != 1:
        raise ConfigError(f"{path}.then: give exactly one of 'apply' or 'stop' (a component name)")
    action = actions[0]
    target = then[action]
    if target not in component_names:
        raise ConfigError(f"{path}.then.{action}: no component named {target!r}; components are "
                          f"{component_names}")
    for_steps = when.get("for_steps", 1)
    steps = then.get("steps")
    if not isinstance(for_steps, int) or for_steps < 1:
        raise ConfigError(f"{path}.when.for_steps: expected an integer >= 1, got {for_steps!r}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"{path}.then.steps: expected an integer >= 1 or null (forever), "
                          f"got {steps!r}")
    return Rule(dictionary=when.get("dictionary"), feature=when.get("feature"),
                above=_number(when["above"], f"{path}.when.above"), action=action, target=target,
                for_steps=for_steps, steps=steps, name=str(data.get("name", "")),
                classifier=when.get("classifier"))


def _ref_dict(dictionary: Any, feature: Any, weight: float | None = None) -> dict:
    if not isinstance(dictionary, str):
        raise ConfigError("a style holding a loaded dictionary object cannot be saved: save the "
                          "dictionary to a folder and refer to it by path")
    out = {"dictionary": dictionary, "feature": feature}
    if weight is not None and weight != 1.0:
        out["weight"] = weight
    return out


def _component_to_dict(c: Component) -> dict:
    out: dict[str, Any] = {"name": c.name, "weight": c.weight}
    if c.concept:
        out["concept"] = c.concept
    else:
        out.update(_ref_dict(c.dictionary, c.feature))
    out.update({"intervention": c.intervention, "schedule": c.schedule, "positions": c.positions})
    if c.options:
        out["options"] = c.options
    if c.branches is not None:
        out["branches"] = list(c.branches)
    if not c.enabled:
        out["enabled"] = False
    return out


def _rule_to_dict(r: Rule) -> dict:
    then: dict[str, Any] = {r.action: r.target}
    if r.steps is not None:
        then["steps"] = r.steps
    if r.classifier is not None:
        if not isinstance(r.classifier, str):
            raise ConfigError("a style holding a loaded classifier object cannot be saved: save the "
                              "classifier to a folder and refer to it by path")
        source = {"classifier": r.classifier}
    else:
        source = _ref_dict(r.dictionary, r.feature)
    when = {**source, "above": r.above, "for_steps": r.for_steps}
    return {"name": r.name, "when": when, "then": then}
