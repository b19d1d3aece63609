"""Every hook a polysteer plugin can implement.

Registration hooks receive a :class:`~polysteer.plugin.registry.Registry` and call
``registry.register(name, factory, ...)``; observer hooks are told about generations.
Implement them in a module or class with ``@polysteer.hookimpl``.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("polysteer")


@hookspec
def polysteer_register_adapters(registry: Any) -> None:
    """Register model adapter factories: ``registry.register(kind, factory, requires=...)``."""


@hookspec
def polysteer_register_dictionary_formats(registry: Any) -> None:
    """Register dictionary file formats: ``registry.register(name, DictionaryFormat(...))``."""


@hookspec
def polysteer_register_interventions(registry: Any) -> None:
    """Register intervention kinds: ``registry.register(kind, factory(dictionary, feature, options))``."""


@hookspec
def polysteer_register_schedules(registry: Any) -> None:
    """Register schedule envelopes: ``registry.register(kind, factory(**params) -> f(progress))``."""


@hookspec
def polysteer_register_position_masks(registry: Any) -> None:
    """Register position masks: ``registry.register(kind, factory(**params) -> mask(step, ...))``."""


@hookspec
def polysteer_register_step_phases(registry: Any) -> None:
    """Register kinds of forward pass: ``registry.register(name, polysteer.Phase(name, ...))``."""


@hookspec
def polysteer_register_shipped_folders(registry: Any) -> None:
    """Register a folder of shipped files: ``registry.register(name, folder)``, ``folder/dictionary/``..."""


@hookspec
def polysteer_register_measures(registry: Any) -> None:
    """Register measures: ``registry.register(name, measure(generation, baseline) -> float)``."""


@hookspec
def polysteer_register_renderers(registry: Any) -> None:
    """Register example renderers: ``registry.register(name, factory(**options) -> Renderer)``."""


@hookspec
def polysteer_register_row_selectors(registry: Any) -> None:
    """Register row selectors: ``registry.register(name, factory(**options) -> RowSelector)``."""


@hookspec
def polysteer_register_attributes(registry: Any) -> None:
    """Register measured attributes: ``registry.register(name, factory(**options) -> Attribute)``."""


@hookspec
def polysteer_register_config_schemas(registry: Any) -> None:
    """Register config schemas for plugin-owned nodes: ``registry.register("model.<kind>", Dataclass)``."""


@hookspec
def polysteer_register_commands(registry: Any) -> None:
    """Register CLI subcommands: ``registry.register(name, Command(...))``."""


@hookspec
def polysteer_register_generate_extensions(registry: Any) -> None:
    """Register what a model kind adds to ``polysteer generate``: ``registry.register(kind, extension)``."""


@hookspec
def polysteer_register_effect_measures(registry: Any) -> None:
    """Register effect measures for label-by-effect: ``registry.register(name, EffectMeasure(...))``."""


@hookspec
def polysteer_register_artifacts(registry: Any) -> None:
    """Register installable models, voices and data sets: ``registry.register(name, Artifact(...))``."""


@hookspec
def polysteer_register_calibration_judges(registry: Any) -> None:
    """Register a modality's calibration judge factory: ``registry.register(modality, factory)``."""


@hookspec
def polysteer_before_generate(adapter: Any, inputs: Any, options: dict) -> None:
    """Observe a generation about to start (log, audit); must not change anything."""


@hookspec
def polysteer_after_generate(adapter: Any, inputs: Any, outputs: Any) -> None:
    """Observe a generation that finished; ``outputs`` is its ``Generation`` record."""


@hookspec
def polysteer_on_error(adapter: Any, error: Exception) -> None:
    """Observe a generation that raised ``error`` (it is re-raised afterwards)."""
