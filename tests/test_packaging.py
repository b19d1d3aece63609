"""The wheel holds every package directory and the shipped configs."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (path,) = out.glob("polysteer-*.whl")
    return zipfile.ZipFile(path)


def package_dirs() -> list[tuple[str, Path]]:
    """(import path, source folder) of every folder with an __init__.py under core/ and plugins/."""
    found = []
    for top, name in (("core", "polysteer"), ("plugins", "polysteer/plugins"),
                      ("configs", "polysteer/configs")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.append(((Path(name) / rel).as_posix(), init.parent))
    return found


def test_every_package_directory_is_in_the_wheel(wheel):
    names = set(wheel.namelist())
    for package, folder in package_dirs():
        for module in folder.glob("*.py"):
            assert f"{package}/{module.name}" in names, f"{package}/{module.name} missing from the wheel"


def test_configs_hold_yaml_only():
    other = [p for p in (ROOT / "configs").rglob("*") if p.is_file() and p.suffix not in (".yaml", ".py")
             and "__pycache__" not in p.parts]
    assert not other, f"configs/ is for YAML; ship weights in a plugin's shipped/ folder: {other}"


SHIPPED = {"core/shipped": "polysteer/shipped", "plugins/text/shipped": "polysteer/plugins/text/shipped",
           "plugins/image/shipped": "polysteer/plugins/image/shipped",
           "plugins/voice/shipped": "polysteer/plugins/voice/shipped", "configs": "polysteer/configs"}


def test_shipped_configs_weights_and_dictionaries_are_in_the_wheel(wheel):
    names = set(wheel.namelist())
    for source, target in SHIPPED.items():
        files = [p for p in (ROOT / source).rglob("*")
                 if p.is_file() and p.suffix in (".yaml", ".json", ".safetensors")]
        assert files, f"nothing shipped under {source}"
        for path in files:
            rel = path.relative_to(ROOT / source).as_posix()
            assert f"{target}/{rel}" in names, f"{source}/{rel} missing from the wheel"


def test_console_script_and_pytest_plugin_entry_points(wheel):
    (ep,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(ep).decode()
    assert "polysteer = polysteer.cli:main" in text
    assert "[pytest11]" in text and "polysteer.testing.fixtures" in text


def test_the_playground_page_is_in_the_wheel(wheel):
    names = set(wheel.namelist())
    static = sorted((ROOT / "core" / "serve" / "static").iterdir())
    assert {p.name for p in static} >= {"index.html", "playground.js", "playground.css"}
    for path in static:
        assert f"polysteer/serve/static/{path.name}" in names, f"{path.name} missing from the wheel"
