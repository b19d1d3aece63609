"""The plugin manager: built by a factory, built-ins first, then entry points of group ``polysteer``.

``create_plugin_manager()`` registers the built-in plugins (:data:`DEFAULT_PLUGINS`), loads every
entry point in group ``polysteer`` unless ``POLYSTEER_DISABLE_PLUGIN_AUTOLOAD`` is set, skips the
names listed in ``POLYSTEER_DISABLE_PLUGINS`` (comma-separated) and calls ``check_pending()`` so a
misspelt hook fails loudly. A plugin that cannot be imported is recorded with the install that
fixes it; it never stops polysteer from starting.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from polysteer import hookspecs
from polysteer.errors import PolysteerError, did_you_mean
from polysteer.plugin.registry import Registry, Requirement

hookimpl = pluggy.HookimplMarker("polysteer")
"""Decorator marking a plugin's hook implementations."""

DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("core", "polysteer.builtins"),
    ("text", "polysteer.plugins.text"),
    ("image", "polysteer.plugins.image"),
    ("voice", "polysteer.plugins.voice"),
)
"""Built-in plugins as (name, module), registered in this order before any entry point."""

# registry attribute -> (registration hook, what one entry is called)
REGISTRIES: dict[str, tuple[str, str]] = {
    "adapters": ("polysteer_register_adapters", "model adapter"),
    "dictionary_formats": ("polysteer_register_dictionary_formats", "dictionary format"),
    "interventions": ("polysteer_register_interventions", "intervention"),
    "schedules": ("polysteer_register_schedules", "schedule"),
    "position_masks": ("polysteer_register_position_masks", "position mask"),
    "step_phases": ("polysteer_register_step_phases", "step phase"),
    "shipped": ("polysteer_register_shipped_folders", "shipped folder"),
    "measures": ("polysteer_register_measures", "measure"),
    "renderers": ("polysteer_register_renderers", "renderer"),
    "row_selectors": ("polysteer_register_row_selectors", "row selector"),
    "attributes": ("polysteer_register_attributes", "measured attribute"),
    "config_schemas": ("polysteer_register_config_schemas", "config schema"),
    "commands": ("polysteer_register_commands", "command"),
    "generate_extensions": ("polysteer_register_generate_extensions", "generate extension"),
    "effect_measures": ("polysteer_register_effect_measures", "effect measure"),
    "artifacts": ("polysteer_register_artifacts", "artifact"),
    "calibration_judges": ("polysteer_register_calibration_judges", "calibration judge"),
}


@dataclass
class PluginInfo:
    """What ``polysteer plugins`` shows about one plugin."""

    name: str
    version: str
    builtin: bool
    registered: dict[str, list[str]] = field(default_factory=dict)
    missing: list[Requirement] = field(default_factory=list)
    error: str | None = None

    @property
    def ready(self) -> bool:
        """Loaded, and every optional dependency of what it registered is installed."""
        return self.error is None and not self.missing

    @property
    def fix(self) -> str:
        """The command(s) that make the plugin ready, or ``""``."""
        if self.error:
            return self.error  # already says what failed and, when known, the fix
        return " && ".join(dict.fromkeys(r.install for r in self.missing))


def _import_fix(err: Exception) -> str:
    """'; fix: pip install X' for a missing module, naming its distribution when known."""
    if not isinstance(err, ModuleNotFoundError) or not err.name:
        return ""
    top = err.name.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [top])
    return f"; fix: pip install {dists[0]}"


def _polysteer_version() -> str:
    try:
        return importlib.metadata.version("polysteer")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class PluginManager:
    """A typed facade over :class:`pluggy.PluginManager` holding every registry."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("polysteer")
        self.pm.add_hookspecs(hookspecs)
        self.adapters = Registry("model adapter")
        self.dictionary_formats = Registry("dictionary format")
        self.interventions = Registry("intervention")
        self.schedules = Registry("schedule")
        self.position_masks = Registry("position mask")
        self.step_phases = Registry("step phase")
        self.shipped = Registry("shipped folder")
        self.measures = Registry("measure")
        self.renderers = Registry("renderer")
        self.row_selectors = Registry("row selector")
        self.attributes = Registry("measured attribute")
        self.config_schemas = Registry("config schema")
        self.commands = Registry("command")
        self.generate_extensions = Registry("generate extension")
        self.effect_measures = Registry("effect measure")
        self.artifacts = Registry("artifact")
        self.calibration_judges = Registry("calibration judge")
        self.failures: dict[str, PluginInfo] = {}
        self._info: dict[str, PluginInfo] = {}
        self.blocked = {n.strip() for n in os.environ.get("POLYSTEER_DISABLE_PLUGINS", "").split(",")
                        if n.strip()}

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``pm.hook.polysteer_before_generate(...)``)."""
        return self.pm.hook

    def registry(self, attribute: str) -> Registry:
        """A registry by attribute name (``"interventions"``...)."""
        return getattr(self, attribute)

    def phases(self) -> dict[str, Any]:
        """Every registered step phase (:class:`~polysteer.steering.step.Phase`), by name."""
        return {entry.name: entry.value for entry in self.step_phases}
    def shipped_folders(self, kind: str) -> list[Path]:
        """The ``kind`` sub-folder (``dictionary``, ``classifier``...) of every folder plugins ship, in
        registration order (built-ins first), where it exists."""
        return [Path(e.value) / kind for e in self.shipped if (Path(e.value) / kind).is_dir()]

    def register(self, plugin: Any, name: str, *, version: str | None = None,
                 builtin: bool = False) -> bool:
        """Register ``plugin`` under ``name`` and collect what it registers.

        Returns False (and registers nothing) if ``name`` is blocked. A duplicate registered name
        raises :class:`~polysteer.errors.RegistryError` naming both plugins.
        """
        if name in self.blocked:
            return False
        self.pm.register(plugin, name)
        try:
            for attribute, (hook_name, _) in REGISTRIES.items():
                registry = self.registry(attribute)._as(name)
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(registry=registry)
        except BaseException:
            self.unregister(name)
            raise
        self._info[name] = PluginInfo(name, version or _polysteer_version(), builtin)
        return True

    def unregister(self, name: str) -> None:
        """Remove a plugin and everything it registered."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        for attribute in REGISTRIES:
            self.registry(attribute).remove_plugin(name)
        self._info.pop(name, None)

    def load_entry_points(self) -> None:
        """Load every entry point of group ``polysteer`` (a broken one is recorded, not raised)."""
        for ep in importlib.metadata.entry_points(group="polysteer"):
            if ep.name in self.blocked or self.pm.get_plugin(ep.name) is not None:
                continue
            version = ep.dist.version if ep.dist else "?"
            try:
                plugin = ep.load()
            except Exception as err:  # a broken plugin must not stop polysteer from starting
                self._fail(ep.name, version, f"import failed: {type(err).__name__}: {err}"
                                             f"{_import_fix(err)}")
                continue
            try:
                self.register(plugin, ep.name, version=version)
            except PolysteerError as err:  # e.g. a name another plugin registered first
                self._fail(ep.name, version, str(err))

    def _fail(self, name: str, version: str, error: str) -> None:
        self.failures[name] = PluginInfo(name, version, False, error=error)
        warnings.warn(f"polysteer plugin {name!r} is not loaded: {error}", stacklevel=3)

    def check_pending(self) -> None:
        """Fail loudly if a plugin implements a hook that does not exist (a misspelling)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as err:
            known = [n for n in dir(hookspecs) if n.startswith("polysteer_")]
            words = str(err).split("'")
            bad = next((w for w in words if w.startswith("polysteer_")), "")
            raise PolysteerError(f"{err}.{did_you_mean(bad, known, n=1)} Known hooks: "
                                 f"{', '.join(known)}") from err

    def plugins(self) -> list[PluginInfo]:
        """Every plugin, loaded or failed, with what it registered and whether it is ready."""
        out = []
        for name, info in self._info.items():
            info.registered, missing = {}, {}
            for attribute in REGISTRIES:
                for entry in self.registry(attribute).by_plugin(name):
                    info.registered.setdefault(attribute, []).append(entry.name)
                    for req in entry.missing():
                        missing[req.install] = req
            info.missing = list(missing.values())
            out.append(info)
        return out + list(self.failures.values())


def create_plugin_manager(*, load_entry_points: bool | None = None,
                          builtins: tuple[tuple[str, str], ...] = DEFAULT_PLUGINS) -> PluginManager:
    """Build a plugin manager: built-ins, then entry points (unless disabled), then check_pending."""
    manager = PluginManager()
    for name, module in builtins:
        manager.register(importlib.import_module(module), name, builtin=True)
    if load_entry_points is None:
        load_entry_points = not os.environ.get("POLYSTEER_DISABLE_PLUGIN_AUTOLOAD")
    if load_entry_points:
        manager.load_entry_points()
    manager.check_pending()
    return manager


_current: ContextVar[PluginManager | None] = ContextVar("polysteer_plugin_manager", default=None)
_default: list[PluginManager] = []


def current_plugin_manager() -> PluginManager:
    """The plugin manager in use: the one set by :func:`use_plugin_manager`, else a default one
    built on first use (no work happens at import time)."""
    manager = _current.get()
    if manager is not None:
        return manager
    if not _default:
        _default.append(create_plugin_manager())
    return _default[0]


@contextmanager
def use_plugin_manager(manager: PluginManager) -> Iterator[PluginManager]:
    """Use ``manager`` (instead of the default) inside the block."""
    token = _current.set(manager)
    try:
        yield manager
    finally:
        _current.reset(token)
