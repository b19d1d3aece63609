"""Load a model through the adapter registered for its kind."""

from __future__ import annotations

from typing import Any

from polysteer.adapter import ModelAdapter
from polysteer.config import validate_plugin_nodes
from polysteer.manager import PluginManager, current_plugin_manager


def load_model(kind: str | dict[str, Any], *, plugins: PluginManager | None = None,
               **options: Any) -> ModelAdapter:
    """Load a model by registered adapter kind, e.g. ``load_model("reference", n_layers=3)``.

    ``kind`` may also be a config node ``{"kind": ..., **options}``. Options are checked against
    the plugin's config schema when it registered one.
    """
    from omegaconf import OmegaConf

    plugins = plugins or current_plugin_manager()
    node = dict(kind) if isinstance(kind, dict) else {"kind": kind}
    node.update(options)
    checked = validate_plugin_nodes(OmegaConf.create({"model": node}), plugins)
    node = OmegaConf.to_container(checked.model)
    factory = plugins.adapters.get(node["kind"])
    return factory(node)
