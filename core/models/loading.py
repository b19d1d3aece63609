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
    device, dtype = _placement(node, plugins)
    checked = validate_plugin_nodes(OmegaConf.create({"model": node}), plugins)
    node = OmegaConf.to_container(checked.model)
    factory = plugins.adapters.get(node["kind"])
    adapter = factory(node)
    if device is not None or dtype is not None:  # a kind whose schema has no device/dtype keys
        adapter.model.to(device=device, dtype=dtype)
    return adapter


def _placement(node: dict[str, Any], plugins: PluginManager) -> tuple[Any, Any]:
    """Resolve ``device``/``dtype`` (the node's own, else :func:`model_defaults`'s) in ``node``.

    A kind whose config schema declares ``device``/``dtype`` gets the resolved words in its node
    (it loads straight onto the device); for any other kind they are taken out of the node and
    returned, and :func:`load_model` moves the loaded model.
    """
    import dataclasses

    from polysteer.models.device import (
        current_model_defaults,
        dtype_name,
        resolve_device,
        resolve_dtype,
    )

    default_device, default_dtype = current_model_defaults()
    device_spec = node.get("device") or default_device
    dtype_spec = node.get("dtype") or default_dtype
    if device_spec is None and dtype_spec is None:
        return None, None
    device = resolve_device(device_spec) if device_spec is not None else None
    dtype = resolve_dtype(dtype_spec, device) if dtype_spec is not None else None
    key = f"model.{node.get('kind')}"
    fields = ({f.name for f in dataclasses.fields(plugins.config_schemas.entry(key).value)}
              if key in plugins.config_schemas else set())
    moved: list[Any] = [None, None]
    for i, (name, value, word) in enumerate((("device", device, str(device)),
                                             ("dtype", dtype, dtype_name(dtype) if dtype else None))):
        if value is None:
            continue
        if name in fields:
            node[name] = word
        else:
            node.pop(name, None)
            moved[i] = value
    return moved[0], moved[1]


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
