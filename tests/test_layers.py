"""The core is layered: sub-packages import each other without circles, and plugins use only the
declared surface (each sub-package's ``__init__``, never its inner modules)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
LAYERS = ["io", "plugin", "config", "features", "steering", "models", "data", "workflows", "preferences",
          "serve", "cli",
          "builtins", "testing"]
"""Sub-packages and top modules from the bottom layer up; each imports only the ones before it
(``errors`` and ``hookspecs`` are below them all; ``polysteer/__init__`` re-exports the public API)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE).with_suffix("").parts
    return ".".join(["polysteer", *(p for p in parts if p != "__init__")])


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported polysteer module, imported at module level?) for every import outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, top) for a in node.names if a.name.startswith("polysteer"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("polysteer"):
            submodules = [f"{node.module}.{a.name}" for a in node.names
                          if f"{node.module}.{a.name}" in MODULES]
            found.extend((m, top) for m in submodules or [node.module])
        for child in ast.iter_child_nodes(node):
            nested = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            visit(child, top and not nested)

    visit(tree, True)
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts}


MODULES = _modules()


def _unit(module: str) -> str | None:
    """The layer a core module belongs to (its sub-package or top module), None if outside core."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "plugins":
        return None
    return parts[1]


def test_sub_packages_only_import_layers_below_them():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        unit = _unit(name)
        if unit not in LAYERS:
            continue
        for target, _ in _imports(path):
            other = _unit(target)
            if other in LAYERS and other != unit and LAYERS.index(other) > LAYERS.index(unit):
                wrong.append(f"{name} imports {target} ({unit} is below {other})")
    assert not wrong, "\n".join(wrong)


def test_every_core_module_belongs_to_a_layer():
    top = {"__init__", "__main__", "errors", "hookspecs"}
    stray = [n for n in _modules() if n != "polysteer" and _unit(n) not in LAYERS
             and n.split(".")[1] not in top]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_no_import_circles_between_modules():
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target, top in _imports(path):
            if top and target in modules and target != name:
                graph[name].add(target)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def walk(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
                return True
            if nxt not in state and walk(nxt, [*trail, nxt]):
                return True
        state[node] = 2
        return False

    for node in sorted(modules):
        if node not in state and walk(node, [node]):
            break
    assert not cycle, " -> ".join(cycle)


def _private_modules() -> set[str]:
    """Inner modules of the sub-packages: core's own business, not the plugin surface."""
    return {n for n in _modules() if n.count(".") == 2 and _unit(n) in LAYERS and
            not n.endswith("__main__") and _unit(n) != "testing"}


def test_the_lint_rule_bans_every_inner_module_for_plugins():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    banned = set(config["tool"]["ruff"]["lint"]["flake8-tidy-imports"]["banned-api"])
    missing = _private_modules() - banned
    assert not missing, f"add these to [tool.ruff.lint.flake8-tidy-imports.banned-api]: {sorted(missing)}"
    stale = {b for b in banned if b.startswith("polysteer.")} - _private_modules()
    assert not stale, f"banned-api lists modules that no longer exist: {sorted(stale)}"


@pytest.mark.parametrize("folder", ["plugins", "examples", "benchmarks", "scripts"])
def test_plugins_import_only_the_declared_surface(folder):
    private = _private_modules()
    wrong = []
    for path in (ROOT / folder).rglob("*.py"):
        for target, _ in _imports(path):
            if target in private:
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, "\n".join(wrong)
