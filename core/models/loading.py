"""Load a model through the adapter registered for its kind."""

from __future__ import annotations

from typing import Any

from polysteer.config import validate_plugin_nodes
from polysteer.errors import ConfigError
from polysteer.io.paths import configs_dir
from polysteer.io.safeload import load_yaml
from polysteer.plugin.manager import PluginManager, current_plugin_manager
from polysteer.steering.adapter import ModelAdapter


def load_model(kind: str | dict[str, Any], *, plugins: PluginManager | None = None,
               **options: Any) -> ModelAdapter:
    """Load a model, e.g. ``load_model("reference", n_layers=3)`` or ``load_model("smollm2")``.

    ``kind`` is a registered adapter kind, the name of a shipped model config
    (``configs/model/<name>.yaml``, e.g. ``smollm2``), or a config node ``{"kind": ..., ...}``.
    Options are checked against the plugin's config schema when it registered one.
    """
    from omegaconf import OmegaConf

    plugins = plugins or current_plugin_manager()
    node = dict(kind) if isinstance(kind, dict) else named_config(kind, plugins)
    node.update(options)
    checked = validate_plugin_nodes(OmegaConf.create({"model": node}), plugins)
    node = OmegaConf.to_container(checked.model)
    factory = plugins.adapters.get(node["kind"])
    return factory(node)


def shipped_model_names() -> list[str]:
    """Names of the shipped model configs (``configs/model/<name>.yaml``)."""
    return sorted(p.stem for p in (configs_dir() / "model").glob("*.yaml"))


def named_config(name: str, plugins: PluginManager) -> dict[str, Any]:
    """``{"kind": name}`` for an adapter kind, else the shipped ``configs/model/<name>.yaml``."""
    path = configs_dir() / "model" / f"{name}.yaml"
    if name in plugins.adapters or not path.exists():
        return {"kind": name}
    data = load_yaml(path, "model config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'kind'")
    return dict(data)
