"""``polysteer doctor``: the versions of polysteer's dependencies in use, checked against the tested ranges.

The declared ranges are polysteer's own requirements, read from its installed package metadata
(the ``dependencies`` and extras of pyproject.toml). :data:`TESTED` says which versions CI ran:
the lowest (the declared lower bound, proven by ``.ci/lower-bounds`` for the core, ``text`` and
``plots`` dependencies; ``None`` where no lower-bound run exists) and the newest. tests/test_doctor.py
keeps the table consistent with pyproject.toml (the same packages; the lowest column is the
declared lower bound) and with the environment the tests run in (no installed dependency is newer
than the newest column: CI installs the newest releases, so a new release that passes the tests
fails that check until the column names it).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from polysteer.cli.main import Command, print_table

TESTED: dict[str, tuple[str | None, str]] = {
    # package: (lowest version CI ran, newest version CI ran)
    "torch": ("2.4.0", "2.14.1"),
    "numpy": ("1.24.0", "2.4.6"),
    "safetensors": ("0.4.1", "0.8.0"),
    "pluggy": ("1.3.0", "1.7.0"),
    "omegaconf": ("2.3.0", "2.4.0"),
    "pyyaml": ("6.0", "6.0.4"),
    "tqdm": ("4.60.0", "4.70.1"),
    "transformers": ("4.46.0", "5.25.0"),
    "gguf": ("0.10.0", "0.19.0"),
    "accelerate": ("0.30.0", "1.16.0"),
    # gguf 0.10 to 0.16 import sentencepiece without declaring it (found by .ci/lower-bounds)
    "sentencepiece": ("0.2.0", "0.2.3"),
    "diffusers": (None, "0.42.1"),
    "pillow": (None, "13.0.0"),
    "python-avatars": (None, "1.4.1"),
    "resvg-py": (None, "0.5.0"),
    "torchaudio": (None, "2.11.1"),
    "onnx": (None, "1.23.2"),
    "espeakng-loader": (None, "0.2.4"),
    "matplotlib": ("3.7.0", "3.11.2"),
    "fastapi": (None, "0.165.0"),
    "uvicorn": (None, "0.55.0"),
    "ray": (None, "2.60.0"),
}
"""The versions CI ran, per runtime dependency: (lowest, newest). ``None``: only the newest ran."""

LOWER_BOUND_GROUPS = ("", "text", "plots")
"""The requirement groups (``""``: the core dependencies) whose lower bounds ``.ci/lower-bounds``
installs and tests; their lowest tested version is their declared lower bound."""

_DEV_EXTRA = "dev"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.*))?$")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version (``2.14.1+cu130`` -> ``(2, 14, 1)``)."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    if not match:
        raise ValueError(f"cannot read the version {version!r}")
    parts = [int(p) for p in match.group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def normalise(name: str) -> str:
    """A distribution name as pip compares them (``PyYAML`` -> ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirement:
    """One declared requirement: the package, its lower bound, and the extra that asks for it."""

    name: str
    lower: str | None
    specifier: str
    group: str  # "" for a core dependency, else the extra's name


def parse_requirement(text: str) -> Requirement | None:
    """A requirement line as in package metadata or pyproject (``None`` for an alias extra)."""
    match = _REQUIREMENT.match(text)
    if not match:
        raise ValueError(f"cannot read the requirement {text!r}")
    name, specifier, marker = match.group(1), match.group(2), match.group(3) or ""
    extra = _EXTRA.search(marker)
    if normalise(name) == "polysteer":
        return None  # the "all" extra names the others
    lower = re.search(r">=\s*([0-9][^,\s]*)", specifier)
    return Requirement(normalise(name), lower.group(1) if lower else None, specifier,
                       extra.group(1) if extra else "")


def declared(requires: list[str] | None = None) -> dict[str, list[Requirement]]:
    """polysteer's declared requirements by package (from its installed metadata by default)."""
    lines = metadata.requires("polysteer") if requires is None else requires
    out: dict[str, list[Requirement]] = {}
    for line in lines or []:
        requirement = parse_requirement(line)
        if requirement is not None and requirement.group != _DEV_EXTRA:
            out.setdefault(requirement.name, []).append(requirement)
    return out


@dataclass(frozen=True)
class Check:
    """One dependency's row in the doctor's table."""

    package: str
    installed: str | None
    declared: str
    tested: str
    groups: str
    status: str  # ok, not installed, below declared, older than tested, newer than tested
    advice: str


def lowest_pins(requires: list[str] | None = None) -> list[str]:
    """``name==lower`` for every core, ``text`` and ``plots`` requirement: what ``.ci/lower-bounds``
    installs."""
    pins = {}
    for name, requirements in declared(requires).items():
        bounds = [r.lower for r in requirements if r.group in LOWER_BOUND_GROUPS and r.lower]
        if bounds:
            pins[name] = f"{name}=={max(bounds, key=release)}"
    return [pins[name] for name in sorted(pins)]


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check(name: str, requirements: list[Requirement], installed: str | None) -> Check:
    """Compare the installed version of ``name`` with its declared and tested ranges."""
    lowest, newest = TESTED.get(name, (None, None))
    bounds = [r.lower for r in requirements if r.lower]
    lower = max(bounds, key=release) if bounds else None
    groups = ", ".join(sorted({r.group or "core" for r in requirements}))
    tested = f"{lowest or newest} .. {newest}" if newest else "untested"
    spec = f">={lower}" if lower else "any"
    status, advice = "ok", ""
    if installed is None:
        status = "not installed"
        advice = "" if "core" in groups else f"only needed for polysteer[{groups.split(', ')[0]}]"
    elif lower and release(installed) < release(lower):
        status = "below declared"
        advice = f"polysteer needs {name}>={lower}: pip install '{name}>={lower}'"
    elif newest is None:
        status = "untested"
        advice = f"CI never ran {name}; report problems with its version"
    elif release(installed) < release(lowest or newest):
        status = "older than tested"
        advice = (f"CI ran {name} {lowest or newest} and newer; pip install '{name}>={lowest or newest}' "
                  "if something fails")
    elif release(installed)[:2] > release(newest)[:2]:
        status = "newer than tested"
        advice = (f"CI ran {name} up to {newest}; pip install '{name}=={newest}' if something "
                  "fails")
    return Check(name, installed, spec, tested, groups, status, advice)


def checks(requires: list[str] | None = None) -> list[Check]:
    """Every declared runtime dependency, checked (the order of :data:`TESTED`, then the rest)."""
    table = declared(requires)
    order = [n for n in TESTED if n in table] + sorted(n for n in table if n not in TESTED)
    return [check(name, table[name], _installed(name)) for name in order]


def warnings(rows: list[Check]) -> list[str]:
    """One line per installed dependency outside its tested range."""
    return [f"{row.package} {row.installed} is {row.status} ({row.tested}): {row.advice}"
            for row in rows if row.installed is not None and row.status != "ok"]


def _doctor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a dependency is outside its tested range")


def _doctor_run(args: argparse.Namespace) -> int:
    rows = checks()
    problems = warnings(rows)
    if args.json:
        print(json.dumps({"python": platform.python_version(),
                          "polysteer": _installed("polysteer"),
                          "dependencies": [asdict(row) for row in rows],
                          "warnings": problems}, indent=2))
    else:
        print(f"polysteer {_installed('polysteer')} on Python {platform.python_version()}")
        print_table(("package", "installed", "declared", "tested", "for", "status"),
                    [(r.package, r.installed or "-", r.declared, r.tested, r.groups, r.status)
                     for r in rows])
        for line in problems:
            print(f"warning: {line}", file=sys.stderr)
        if not problems:
            print("every installed dependency is within the tested ranges")
    return 1 if problems and args.strict else 0


def summary_line() -> str | None:
    """A one-line warning for ``polysteer plugins`` when dependencies are outside the tested ranges."""
    problems = warnings(checks())
    if not problems:
        return None
    names = ", ".join(p.split(" ", 1)[0] for p in problems)
    return (f"warning: {len(problems)} dependencies outside the tested ranges ({names}); "
            "run 'polysteer doctor'")


DOCTOR_COMMAND = Command(
    "print the versions of polysteer's dependencies in use and warn about any outside the tested "
    "ranges", _doctor_args, _doctor_run)


def as_dict(rows: list[Check]) -> list[dict[str, Any]]:
    """The rows as plain dicts (for tests and JSON)."""
    return [asdict(row) for row in rows]
