"""The plugin manager: built-ins first, entry points, blocking, duplicates, missing dependencies."""

import pytest

import polysteer
from polysteer import hookspecs
from polysteer.errors import MissingDependencyError, PolysteerError, RegistryError
from polysteer.plugin.manager import DEFAULT_PLUGINS, REGISTRIES, create_plugin_manager
from polysteer.plugin.registry import Requirement


def test_builtins_register_every_core_kind(plugin_manager):
    assert [i.name for i in plugin_manager.plugins()][:4] == [n for n, _ in DEFAULT_PLUGINS]
    assert {"add", "clamp", "ablate", "scale"} <= set(plugin_manager.interventions.names())
    assert {"constant", "ramp", "window", "decay", "piecewise"} <= set(plugin_manager.schedules.names())
    assert {"all", "prompt", "generated", "span", "region"} <= set(plugin_manager.position_masks.names())
    assert {"plugins", "sites", "config", "run", "demo-reference"} <= set(plugin_manager.commands.names())
    assert {"demo", "steer", "inspect", "concept", "models"} <= set(plugin_manager.commands.names())
    assert plugin_manager.interventions.entry("add").plugin == "core"


def test_every_registry_has_a_hookspec():
    specs = {n for n in dir(hookspecs) if n.startswith("polysteer_")}
    assert {hook for hook, _ in REGISTRIES.values()} <= specs


class Shouter:
    """A throwaway plugin adding one intervention and one schedule."""

    @polysteer.hookimpl
    def polysteer_register_interventions(self, registry):
        registry.register("shout", lambda d, f, o: None, description="make it loud")

    @polysteer.hookimpl
    def polysteer_register_schedules(self, registry):
        registry.register("pulse", lambda period=0.1: (lambda p: 1.0))


def test_register_plugin_fixture_adds_and_removes(plugin_manager, register_plugin):
    name = register_plugin(Shouter(), "shouter")
    assert plugin_manager.interventions.entry("shout").plugin == "shouter"
    info = {i.name: i for i in plugin_manager.plugins()}["shouter"]
    assert info.registered == {"interventions": ["shout"], "schedules": ["pulse"]}
    assert info.ready
    plugin_manager.unregister(name)
    assert "shout" not in plugin_manager.interventions


class Duplicate:
    @polysteer.hookimpl
    def polysteer_register_interventions(self, registry):
        registry.register("add", lambda d, f, o: None)


def test_duplicate_name_names_both_plugins(plugin_manager):
    with pytest.raises(RegistryError, match=r"'core'.*'dup'"):
        plugin_manager.register(Duplicate(), "dup")
    assert plugin_manager.pm.get_plugin("dup") is None, "a failed plugin must be rolled back"
    assert plugin_manager.interventions.entry("add").plugin == "core"


class Misspelt:
    @polysteer.hookimpl
    def polysteer_register_intervention(self, registry):  # missing 's'
        pass


def test_misspelt_hook_fails_loudly_with_a_suggestion(plugin_manager):
    plugin_manager.register(Misspelt(), "misspelt")
    with pytest.raises(PolysteerError, match="polysteer_register_interventions"):
        plugin_manager.check_pending()


class NeedsMissing:
    @polysteer.hookimpl
    def polysteer_register_adapters(self, registry):
        registry.register("ghost", lambda node: None,
                          requires=[Requirement("ghost_pkg_xyz", "pip install 'polysteer[ghost]'")])


def test_missing_dependency_is_reported_with_the_fix(plugin_manager, register_plugin):
    register_plugin(NeedsMissing(), "ghosts")
    info = {i.name: i for i in plugin_manager.plugins()}["ghosts"]
    assert not info.ready
    assert info.fix == "pip install 'polysteer[ghost]'"
    with pytest.raises(MissingDependencyError, match=r"pip install 'polysteer\[ghost\]'"):
        polysteer.load_model("ghost")


def test_unknown_name_lists_choices(plugin_manager):
    with pytest.raises(RegistryError, match="Did you mean 'ramp'"):
        plugin_manager.schedules.get("rampp")


def test_disable_plugins_env_blocks_builtins_too(monkeypatch):
    monkeypatch.setenv("POLYSTEER_DISABLE_PLUGINS", "voice, image")
    manager = create_plugin_manager(load_entry_points=False)
    assert [i.name for i in manager.plugins()] == ["core", "text"]


def test_autoload_env_skips_entry_points(monkeypatch):
    calls = []
    monkeypatch.setenv("POLYSTEER_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setattr("polysteer.plugin.manager.PluginManager.load_entry_points",
                        lambda self: calls.append(1))
    create_plugin_manager()
    assert calls == []
    monkeypatch.delenv("POLYSTEER_DISABLE_PLUGIN_AUTOLOAD")
    create_plugin_manager()
    assert calls == [1]


class Observer:
    def __init__(self):
        self.seen = []

    @polysteer.hookimpl
    def polysteer_before_generate(self, adapter, inputs, options):
        self.seen.append(("before", options))

    @polysteer.hookimpl
    def polysteer_after_generate(self, adapter, inputs, outputs):
        self.seen.append(("after", tuple(outputs.outputs.shape)))

    @polysteer.hookimpl
    def polysteer_on_error(self, adapter, error):
        self.seen.append(("error", type(error).__name__))


def test_observers_see_generations_and_errors(register_plugin):
    observer = Observer()
    register_plugin(observer)
    model = polysteer.load_model("reference")
    model.generate([[1, 2, 3]], max_new_tokens=2)
    with pytest.raises(ValueError):
        model.generate([[1, 2, 3]], max_new_tokens=1000)
    assert observer.seen == [("before", {"max_new_tokens": 2}), ("after", (1, 5)),
                             ("before", {"max_new_tokens": 1000}), ("error", "ValueError")]
