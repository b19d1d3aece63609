"""``polysteer doctor``: versions in use against the declared (pyproject) and tested ranges."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from polysteer.cli import main
from polysteer.cli.doctor import (
    LOWER_BOUND_GROUPS,
    TESTED,
    Requirement,
    check,
    declared,
    lowest_pins,
    release,
)

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> list[str]:
    """pyproject.toml's requirements in package-metadata form (``...; extra == "text"``)."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        lines += [f'{r}; extra == "{extra}"' for r in requirements]
    return lines


def test_the_tested_table_covers_exactly_the_declared_runtime_dependencies() -> None:
    assert set(TESTED) == set(declared(_pyproject_requirements()))


def test_the_lowest_tested_versions_are_the_declared_lower_bounds_of_core_and_text() -> None:
    for name, requirements in declared(_pyproject_requirements()).items():
        lowest, newest = TESTED[name]
        bounds = [release(r.lower) for r in requirements if r.lower]
        assert release(newest) >= max(bounds), f"{name}: the newest tested is below the bound"
        if any(r.group in LOWER_BOUND_GROUPS for r in requirements):
            assert lowest is not None and release(lowest) == max(bounds), (
                f"{name}: .ci/lower-bounds installs {max(bounds)}, the table says {lowest}")
        else:
            assert lowest is None, f"{name}: no lower-bound run tests {lowest}"


def test_lowest_pins_are_the_declared_lower_bounds() -> None:
    pins = lowest_pins(_pyproject_requirements())
    assert "torch==2.4" in pins and "transformers==4.46" in pins
    assert "matplotlib==3.7" in pins
    assert not any(p.startswith(("diffusers", "torchaudio", "pytest")) for p in pins)
    for pin in pins:
        name, version = pin.split("==")
        assert release(TESTED[name][0]) == release(version)


def test_the_installed_metadata_is_pyproject() -> None:
    """The doctor reads the installed metadata; it must say what pyproject.toml says."""
    assert declared() == declared(_pyproject_requirements())


def _req(lower: str | None, group: str = "text") -> list[Requirement]:
    return [Requirement("transformers", lower, f">={lower}" if lower else "", group)]


@pytest.mark.parametrize(("installed", "status"), [
    ("4.46.0", "ok"), ("4.57.6", "ok"), ("5.25.0", "ok"), ("5.25.9", "ok"),
    ("4.40.2", "below declared"), ("5.26.0", "newer than tested"), ("6.0.0", "newer than tested"),
    (None, "not installed"),
])
def test_check_places_a_version_in_the_ranges(installed: str | None, status: str) -> None:
    row = check("transformers", _req("4.46"), installed)
    assert row.status == status
    lowest, newest = TESTED["transformers"]
    assert row.declared == ">=4.46" and row.tested == f"{lowest} .. {newest}"
    if status == "below declared":
        assert "pip install 'transformers>=4.46'" in row.advice


def test_a_version_between_the_bound_and_the_only_tested_one_is_older_than_tested() -> None:
    requirement = [Requirement("diffusers", "0.30", ">=0.30", "image")]
    newest = TESTED["diffusers"][1]
    assert check("diffusers", requirement, "0.30.0").status == "older than tested"
    assert check("diffusers", requirement, newest).status == "ok"


def test_release_reads_local_and_short_versions() -> None:
    assert release("2.14.1+cu130") == (2, 14, 1)
    assert release("6") == release("6.0") == (6,)
    assert release("4.46.0rc1") == (4, 46)


def test_doctor_prints_every_dependency_with_its_installed_version(capsys) -> None:
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["package"]: row for row in report["dependencies"]}
    assert set(rows) == set(TESTED)
    assert rows["torch"]["installed"] == metadata.version("torch")
    assert rows["torch"]["groups"] == "core"
    assert all(w.split(" ", 1)[0] in rows for w in report["warnings"])


def test_doctor_warns_about_a_version_outside_the_tested_range(monkeypatch, capsys) -> None:
    from polysteer.cli import doctor

    real = doctor._installed
    monkeypatch.setattr(doctor, "_installed",
                        lambda name: "4.40.0" if name == "transformers" else real(name))
    assert main(["doctor"]) == 0
    captured = capsys.readouterr()
    assert "transformers     4.40.0" in captured.out
    assert "warning: transformers 4.40.0 is below declared" in captured.err
    assert "pip install 'transformers>=4.46'" in captured.err
    assert main(["doctor", "--strict"]) == 1
    capsys.readouterr()
    assert main(["plugins"]) == 0
    assert "run 'polysteer doctor'" in capsys.readouterr().out


def test_the_newest_tested_column_is_not_behind_the_versions_these_tests_run_on() -> None:
    """TESTED's newest column is typed by hand; this keeps it honest. The tests run on whatever is
    installed (CI installs the newest releases), so a dependency installed at a newer release
    than the column names has just been tested on it, and the column must say so: update TESTED
    (``polysteer doctor --json`` prints the installed versions). Older installs (a local
    environment, the lower-bounds stage) are within the range and pass."""
    behind = []
    for name, (_lowest, newest) in TESTED.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if release(installed) > release(newest):
            behind.append(f"{name}: these tests run on {installed}, TESTED says newest {newest}")
    assert not behind, "; ".join(behind)
