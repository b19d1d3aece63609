"""The polysteer command line: help everywhere, plugins, sites, config, run, demo."""

import json
import subprocess
import sys

import pytest

from polysteer.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polysteer.cli", *args], capture_output=True,
                          text=True, timeout=120, env={"POLYSTEER_DISABLE_PLUGIN_AUTOLOAD": "1",
                                                       "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})


def test_help_lists_every_registered_command(plugin_manager, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in plugin_manager.commands.names():
        assert name in out


def test_every_command_has_help(plugin_manager, capsys):
    for name in plugin_manager.commands.names():
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name
        assert "usage: polysteer " + name in capsys.readouterr().out


def test_plugins_lists_modalities_with_status():
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    for name in ("core", "text", "image", "voice"):
        assert f"\n{name} " in "\n" + result.stdout
    data = json.loads(run_cli("plugins", "--json").stdout)
    core = next(p for p in data if p["name"] == "core")
    assert core["ready"] and "add" in core["registered"]["interventions"]


def test_sites_and_errors(plugin_manager, capsys):
    assert main(["sites", "reference"]) == 0
    assert "blocks.1.resid_post  (32 channels" in capsys.readouterr().out
    assert main(["sites", "refrence"]) == 2
    assert "Did you mean 'reference'" in capsys.readouterr().err


def test_config_shows_the_composition(plugin_manager, capsys):
    assert main(["config", "experiment=reference-demo", "seed=3"]) == 0
    out = capsys.readouterr().out
    assert "experiment/reference-demo.yaml -> command line" in out
    assert "seed: 3" in out
    assert main(["config", "seed=x"]) == 2
    assert "seed" in capsys.readouterr().err


def test_run_writes_a_complete_run_folder(plugin_manager, tmp_path, capsys):
    code = main(["run", "experiment=reference-demo", "experiment.intensities=[0,1]",
                 "--output-dir", str(tmp_path)])
    assert code == 0
    (folder,) = tmp_path.iterdir()
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"config.yaml", "metrics.jsonl", "report.html", "outputs/unsteered.json",
            "outputs/intensity-0.json", "outputs/intensity-1.json"} <= names
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["intensity"] for r in rows] == [0.0, 1.0]
    assert rows[0]["changed_fraction"] == 0.0, "intensity 0 must reproduce the unsteered output"
    assert rows[1]["high_token_fraction"] > rows[0]["high_token_fraction"]


def test_run_without_a_style_says_how_to_pick_one(plugin_manager, tmp_path, capsys):
    assert main(["run", "--output-dir", str(tmp_path)]) == 2
    assert "style=NAME" in capsys.readouterr().err
