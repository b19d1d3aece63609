"""The docs stay true: every hook is documented, every example runs, every kind is described.

(a) every hookspec has a section in docs/hooks.md, and every section there is a real hookspec
    (the pattern of datasette's tests/test_docs.py);
(b) every ```python block in docs/*.md (and README.md) runs: per file, in order, in one namespace,
    in a temporary working directory, with HF_HUB_OFFLINE=1;
(c) every built-in intervention, schedule and position-mask kind is described in docs/contracts.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
import traceback
import types
from pathlib import Path

import pytest

import polysteer
from polysteer import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)
HOOK_HEADING = re.compile(r"^#+\s+`(?P<name>[^`]+)`\s*$", re.M)


def markdown_files() -> list[Path]:
    files = sorted(DOCS.glob("*.md"))
    readme = ROOT / "README.md"
    return [*files, readme] if readme.exists() else files


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block in ``path``."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m["code"])
            for m in FENCE.finditer(text) if m["lang"] == "python"]


# -- (a) hooks --------------------------------------------------------------------------------------
def hookspec_names() -> set[str]:
    return {name for name in dir(hookspecs)
            if name.startswith("polysteer_") and callable(getattr(hookspecs, name))}


def hook_headings() -> list[str]:
    path = DOCS / "hooks.md"
    text = path.read_text() if path.exists() else ""
    return [m["name"] for m in HOOK_HEADING.finditer(text)]


def test_hookspecs_exist():
    assert len(hookspec_names()) >= 10


@pytest.mark.parametrize("hook", sorted(hookspec_names()))
def test_every_hookspec_is_documented(hook):
    assert hook in hook_headings(), f"docs/hooks.md has no section headed `{hook}`"


@pytest.mark.parametrize("heading", hook_headings())
def test_every_documented_hook_exists(heading):
    assert heading in hookspec_names(), f"docs/hooks.md documents `{heading}`, which is not a hookspec"


def test_hook_sections_are_unique():
    headings = hook_headings()
    assert len(headings) == len(set(headings))


# -- (b) examples ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("POLYSTEER_DISABLE_PLUGINS", raising=False)
    monkeypatch.setattr(sys, "argv", ["docs-example"])
    name = path.relative_to(ROOT).as_posix()
    # a real module, so that dataclasses and type hints defined in the examples can find it
    module = types.ModuleType(f"docs_example_{path.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    manager = polysteer.create_plugin_manager(load_entry_points=False)
    with polysteer.use_plugin_manager(manager):
        for number, (line, code) in enumerate(python_blocks(path), start=1):
            try:
                exec(compile(code, f"{name}:{line} (python block {number})", "exec"), namespace)
            except BaseException:
                pytest.fail(f"{name}: python block {number} (line {line}) failed:\n"
                            f"{traceback.format_exc()}", pytrace=False)


def test_every_doc_has_examples_or_is_reference():
    # the narrative pages must show runnable code
    for page in ("contracts.md", "plugins.md", "hooks.md", "configs.md"):
        assert python_blocks(DOCS / page), f"docs/{page} has no python examples"


# -- (c) registered kinds -------------------------------------------------------------------------
def registered_kinds() -> list[tuple[str, str]]:
    manager = polysteer.create_plugin_manager(load_entry_points=False)
    return [(attribute, name) for attribute in ("interventions", "schedules", "position_masks")
            for name in manager.registry(attribute).names()]


@pytest.mark.parametrize(("registry", "kind"), registered_kinds())
def test_every_kind_is_described_in_contracts(registry, kind):
    text = (DOCS / "contracts.md").read_text()
    assert f"`{kind}`" in text, f"docs/contracts.md never mentions the {registry} kind `{kind}`"


# -- links and figures -------------------------------------------------------------------------------
LINK = re.compile(r"\]\((?P<target>[^)\s#]*)(?:#(?P<anchor>[^)\s]*))?\)")
HEADING = re.compile(r"^#+\s+(?P<title>.+?)\s*$", re.M)


def anchors(path: Path) -> set[str]:
    """GitHub-style anchors of the headings in a markdown file."""
    text = FENCE.sub("", path.read_text())
    slugs = set()
    for m in HEADING.finditer(text):
        title = m["title"].strip().lower()
        slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    text = FENCE.sub("", path.read_text())
    for m in LINK.finditer(text):
        target, anchor = m["target"], m["anchor"]
        if "://" in target or target.startswith("mailto:"):
            continue
        linked = path.parent / target if target else path
        assert linked.exists(), f"{path.name}: broken link {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{path.name}: no heading #{anchor} in {linked.name}"


def test_figure_script_draws(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "forward-pass.png"
    subprocess.run([sys.executable, str(DOCS / "make_figures.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (DOCS / "figures" / "forward-pass.png").exists(), "run python docs/make_figures.py"
