"""pytest fixtures for polysteer and plugin authors (registered through the ``pytest11`` entry point).

Kept import-light: nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh plugin manager with the built-ins only (no entry points), used as the current one."""
    from polysteer.plugin.manager import create_plugin_manager, use_plugin_manager

    monkeypatch.delenv("POLYSTEER_DISABLE_PLUGINS", raising=False)
    manager = create_plugin_manager(load_entry_points=False)
    with use_plugin_manager(manager):
        yield manager


@pytest.fixture
def register_plugin(plugin_manager: Any) -> Iterator[Callable[..., str]]:
    """``register_plugin(obj, name=None)``: register a throwaway plugin for this test only."""
    names: list[str] = []

    def register(plugin: Any, name: str | None = None) -> str:
        name = name or f"test-plugin-{len(names)}"
        plugin_manager.register(plugin, name)
        plugin_manager.check_pending()
        names.append(name)
        return name

    yield register
    for name in reversed(names):
        plugin_manager.unregister(name)
