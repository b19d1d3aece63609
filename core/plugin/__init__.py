"""Plugin machinery: registries and the plugin manager (hook specs live in ``polysteer.hookspecs``).

The names below are the declared surface plugins import (``from polysteer.plugin import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.plugin.manager import (
    PluginManager,
    create_plugin_manager,
    current_plugin_manager,
    hookimpl,
    use_plugin_manager,
)
from polysteer.plugin.registry import Registry, Requirement, catalogue_entry

__all__ = [
    "PluginManager", "Registry", "Requirement", "catalogue_entry", "create_plugin_manager",
    "current_plugin_manager", "hookimpl", "use_plugin_manager",
]
