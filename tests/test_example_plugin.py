"""The example third-party plugin (examples/polysteer-example), found the way users install it.

Nothing is pip-installed: each test writes a ``*.dist-info`` folder (METADATA + entry_points.txt)
into ``tmp_path`` and runs polysteer in a subprocess with ``tmp_path`` and the example's folder on
``PYTHONPATH``, so ``importlib.metadata`` sees exactly what an installed package would declare.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import polysteer as ps

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "polysteer-example"


def _dist_info(site: Path, name: str, version: str, entry_points: dict[str, str]) -> None:
    """Declare an installed distribution ``name`` with entry points in group ``polysteer``."""
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir()
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {module}\n" for key, module in entry_points.items())
    (folder / "entry_points.txt").write_text(f"[polysteer]\n{lines}")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site folder where the example plugin is "installed" (its entry point only)."""
    _dist_info(tmp_path, "polysteer-example", "0.1.0", {"example": "polysteer_example"})
    return tmp_path


@pytest.fixture
def broken_site(site: Path) -> Path:
    """``site`` plus a plugin whose module imports a package that is not installed."""
    _dist_info(site, "polysteer-broken", "0.2.0", {"broken": "polysteer_broken"})
    (site / "polysteer_broken.py").write_text("import some_missing_pkg_xyz  # noqa: F401\n")
    return site


def _run(site: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python *args`` with ``site`` and the example on the path, and no inherited switches."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POLYSTEER_DISABLE")}
    environment["PYTHONPATH"] = os.pathsep.join([str(site), str(EXAMPLE)])
    environment.update(env or {})
    result = subprocess.run([sys.executable, *args], env=environment, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _plugins(site: Path, **env: str) -> dict[str, dict[str, Any]]:
    """``polysteer plugins --json``, keyed by plugin name."""
    out = _run(site, "-m", "polysteer.cli", "plugins", "--json", env=env).stdout
    return {info["name"]: info for info in json.loads(out)}


def test_plugins_lists_the_example(site: Path) -> None:
    info = _plugins(site)["example"]
    assert info["version"] == "0.1.0"
    assert info["builtin"] is False and info["ready"] is True and info["fix"] == ""
    assert info["registered"] == {
        "adapters": ["example-conv"], "interventions": ["rotate"],
        "measures": ["example_centroid_shift"], "config_schemas": ["model.example-conv"],
        "effect_measures": ["example-centroid"],
        "renderers": ["example-frames"], "attributes": ["example-frame-centroid"]}


def test_plugins_table_shows_the_example(site: Path) -> None:
    out = _run(site, "-m", "polysteer.cli", "plugins").stdout
    assert "example 0.1.0 (installed): ready" in out.splitlines()
    block = out.split("example 0.1.0 (installed): ready", 1)[1]
    assert "    adapters: example-conv" in block
    assert "    interventions: rotate" in block


def test_disable_plugins_hides_it(site: Path) -> None:
    plugins = _plugins(site, POLYSTEER_DISABLE_PLUGINS="nothing-else, example")
    assert "example" not in plugins
    assert "core" in plugins, "built-ins stay"


def test_disable_autoload_skips_it(site: Path) -> None:
    plugins = _plugins(site, POLYSTEER_DISABLE_PLUGIN_AUTOLOAD="1")
    assert "example" not in plugins
    assert [name for name, info in plugins.items() if not info["builtin"]] == []


def test_plugin_that_fails_to_import_is_listed_with_its_fix(broken_site: Path) -> None:
    out = _run(broken_site, "-m", "polysteer.cli", "plugins").stdout
    broken = [line for line in out.splitlines() if line.startswith("broken ")]
    assert len(broken) == 1, out
    assert broken[0].startswith("broken 0.2.0 (installed): NOT READY")
    assert "pip install some_missing_pkg_xyz" in broken[0]
    assert "example 0.1.0 (installed): ready" in out.splitlines(), "other plugins still load"
    info = _plugins(broken_site)["broken"]
    assert info["ready"] is False and info["registered"] == {}
    assert "pip install some_missing_pkg_xyz" in info["fix"]
    assert "broken" not in _plugins(broken_site, POLYSTEER_DISABLE_PLUGINS="broken")


def test_load_model_and_sites_through_the_entry_point(site: Path) -> None:
    code = ("import polysteer as ps\n"
            "adapter = ps.load_model('example-conv', n_blocks=2)\n"
            "print(type(adapter).__module__, type(adapter).__name__, ' '.join(adapter.sites()))\n")
    out = _run(site, "-c", code).stdout.split()
    assert out[:2] == ["polysteer_example.model", "ExampleConvAdapter"]
    assert out[2:] == ["embed", "blocks.0.residual", "blocks.0.skip", "blocks.1.residual",
                       "blocks.1.skip", "skips"]
    sites = _run(site, "-m", "polysteer.cli", "sites", "example-conv").stdout.splitlines()
    assert sites[0] == "embed  (16 channels, output of Conv1d)"
    assert sites[-1] == "skips  (16 channels, input of Sequential)"


def test_load_model_in_process(register_plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through the ``register_plugin`` fixture, as a plugin's own tests would do it."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import polysteer_example  # importable only from here on: the example is not installed

    register_plugin(polysteer_example, "example")
    adapter = ps.load_model({"kind": "example-conv", "channels": 4, "n_bins": 3})
    frames = torch.zeros(2, 3, 5)
    assert adapter.generate(frames, max_new_frames=2).outputs.shape == (2, 3, 7)
    with pytest.raises(ps.ConfigError, match="model.example-conv accepts"):
        ps.load_model("example-conv", layers=2)
