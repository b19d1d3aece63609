"""One CLI convention: every command reports a user's mistake as ``error: <problem>. <fix>`` on one
line with exit code 2 (no traceback), and commands live in CLI modules only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from polysteer.cli import CommandError, main

ROOT = Path(__file__).resolve().parents[1]

# A typical mistake per command: a misspelt or missing model, style, file, dictionary, dataset...
BAD_INPUTS: dict[str, list[str]] = {
    "sites": ["sites", "refrence"],
    "config": ["config", "seed=x"],
    "run": ["run", "--output-dir", "{tmp}"],
    "datasets": ["datasets", "fetch"],
    "generate": ["generate", "--model", "refrence"],
    "steer": ["steer", "--model", "./no-such-model", "--style", "pirate", "hello"],
    "inspect": ["inspect", "--model", "./no-such-model", "--dictionary", "x", "hello"],
    "concept": ["concept", "build", "no-such-spec"],
    "dictionary": ["dictionary", "harvest", "no-such-config"],
    "labels": ["labels", "show", "no-such-dictionary"],
    "models": ["models", "verify"],
    "demo": ["demo", "--style", "no-such-style", "--output-dir", "{tmp}"],
    "demo-text": ["demo-text", "--model", "./no-such-model"],
    "create": ["create", "a walk", "--style", "no-such-style", "-o", "{tmp}/c"],
    "classify": ["classify", "predict", "--classifier", "no-such-classifier", "hello"],
    "search": ["search"],
    "draw": ["draw", "--model", "./no-such-model"],
    "speak": ["speak", "--voice", "./no-such-voice", "hello"],
    "transcribe": ["transcribe", "no-such-file.wav"],
    "serve": ["serve", "--model", "refrence"],
    "prefs": ["prefs", "undo", "nobody", "--store", "{tmp}/prefs.sqlite"],
    "export": ["export", "gguf", "no-such-style", "--model", "reference", "-o", "{tmp}/s.gguf"],
    "import": ["import", "gguf", "{tmp}/no-such.gguf", "--model", "reference", "-o", "{tmp}/d"],
    "calibrate": ["calibrate", "no-such-style", "--model", "reference"],
    "audit": ["audit", "no-such-style", "--model", "reference"],
    "style": ["style", "from-example", "no-such-file.txt", "--model", "reference", "-o", "{tmp}/s.yaml"],
}
NO_USER_VALUES = {"plugins", "demo-reference", "doctor"}  # flags only: argparse checks all they take


def test_every_builtin_command_has_a_bad_input_case(plugin_manager):
    builtin = {e.name for e in plugin_manager.commands if e.plugin in ("core", "text", "image", "voice")}
    assert builtin - NO_USER_VALUES <= set(BAD_INPUTS), "add a typical mistake for the new command"


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_a_mistake_is_one_error_line_and_exit_2(name, plugin_manager, tmp_path, monkeypatch, capsys):
    if name not in plugin_manager.commands:
        pytest.skip(f"{name} is not registered here")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    argv = [a.format(tmp=tmp_path) for a in BAD_INPUTS[name]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]


def test_command_error_reads_problem_then_fix(plugin_manager, capsys):
    err = CommandError("--grid needs at least 2 columns.", "Pass --grid 2 or more")
    assert str(err) == "--grid needs at least 2 columns. Pass --grid 2 or more"
    assert main(["generate", "--model", "reference", "--style", "reference-demo", "--grid", "1"]) == 2
    assert capsys.readouterr().err == "error: --grid needs at least 2 columns, got 1. Pass --grid 2 or more\n"


@pytest.mark.parametrize("inputs", [["[1, 2, 3]", "[1, 2]"], [str(list(range(1, 60)) * 3)], ["hello"]])
def test_inputs_a_model_cannot_take_are_one_error_line(inputs, plugin_manager, capsys):
    assert main(["generate", "--model", "reference", *inputs]) == 2  # ragged, too long, not ids
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: model 'reference' cannot generate from")
    assert ". Give the INPUTs" in line or ". Change the INPUTs" in line


def test_argparse_usage_errors_stay_argparse(plugin_manager, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--intensity", "lots", "--model", "reference"])
    assert exit_info.value.code == 2
    assert "usage: polysteer generate" in capsys.readouterr().err


def _cli_module(path: Path) -> bool:
    """Core's CLI package, and a plugin's ``commands.py`` / ``*_cli.py``."""
    return (path.parent.name == "cli" and path.parent.parent.name == "core"
            or path.name in ("cli.py", "commands.py") or path.name.endswith("_cli.py"))


@pytest.mark.parametrize("folder", ["core", "plugins"])
def test_argument_parsing_lives_in_cli_modules_only(folder):
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if _cli_module(path):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if "argparse" in names:
                    offenders.append(f"{path.relative_to(ROOT)} imports argparse")
            elif isinstance(node, ast.FunctionDef) and node.name in ("main", "add_arguments"):
                offenders.append(f"{path.relative_to(ROOT)} defines {node.name}()")
            elif isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                offenders.append(f"{path.relative_to(ROOT)} runs as a script")
    assert not offenders, "move these into a CLI module or scripts/: " + "; ".join(offenders)
