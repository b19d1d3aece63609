"""Atomic, code-free file formats: safetensors for tensors, JSON for metadata.

Nothing here unpickles: a shared dictionary or style must not be able to run code.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from polysteer.errors import CorruptFileError
from polysteer.io.safeload import check_regular_file, load_json

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path, directory: bool = False) -> None:
    """Give a temp file/folder the permissions a normally created one would have (umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def temp_tag() -> str:
    """``<pid>-<random>``: names this process's temporary siblings so a later run can tell a dead
    writer's debris (its process is gone) from a live writer's work in progress."""
    return f"{os.getpid()}-{os.urandom(4).hex()}"


_tag = temp_tag
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}(\..*)?\.(tmp|lnk)")


def clean_dead_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove every temporary entry in ``folder`` (``.<name>.<pid>-<rand>...tmp``) whose writer
    process is gone or that is older than :data:`DEBRIS_AGE_S`: what killed runs, fetches and
    saves left. Returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in list(folder.iterdir()):
        match = _TEMP.fullmatch(entry.name)
        if not match:
            continue
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if not _pid_alive(int(match["pid"])) or age > DEBRIS_AGE_S:
            final = folder / match["name"]
            inner = entry / match["name"]
            if not os.path.lexists(final) and inner.is_dir() and not inner.is_symlink():
                os.replace(inner, final)  # a swap killed between its two renames: put it back
            _remove(entry)
            removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    Debris of writers killed earlier (``.<name>.<pid>-<rand>.tmp`` of a dead process) is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_debris(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish_mode(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- folders replaced atomically -------------------------------------------------------------------
# A folder published for the first time is its staging folder renamed. Replacing it makes ``final``
# a relative symlink to a complete, never-modified version folder ``.<name>.v-<pid>-<rand>`` beside
# it: the new version is staged, renamed to its version name, and a fresh symlink is renamed over
# ``final`` (one atomic rename(2); a real folder is swapped with the symlink by Linux's
# renameat2(RENAME_EXCHANGE)), so a reader opening ``final`` finds the old version or the new one,
# whole. A reader pins the version once (:func:`pinned_folder`) and reads every file from it, so it
# never mixes two versions; the replaced version is then removed, and :func:`read_folder` retries a
# load whose version vanished under it. Where symlinks or renameat2 are missing (Windows without the
# symlink right, macOS) the old folder is moved aside first: a short window without ``final`` that
# :func:`read_folder` waits through. A kill at any point leaves ``final`` naming a complete version,
# and the next write of ``final`` removes what the killed writer left (:func:`clean_debris`).
VERSION_MARK = ".v-"
DEBRIS_AGE_S = 24 * 3600.0
"""Temporary siblings older than this are debris even if a process with their pid is alive."""
VERSION_AGE_S = 60.0
"""A version folder ``final`` no longer links to is removed once this old (or its writer is gone);
younger ones of a live writer may be about to be linked."""


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _current_version(final: Path) -> str | None:
    """Name of the version folder ``final`` links to, or None when it is not such a link."""
    try:
        target = os.readlink(final)
    except OSError:
        return None
    name = Path(target).name
    return name if name.startswith(f".{final.name}{VERSION_MARK}") else None


def clean_debris(final: str | os.PathLike, *, keep: tuple[str, ...] = ()) -> list[Path]:
    """Remove what killed writers of ``final`` left beside it; return what was removed.

    Staging folders, temporary files and links (``.<name>.<pid>-<rand>.tmp``/``.lnk``) of a process
    that no longer runs (or older than :data:`DEBRIS_AGE_S`), and version folders that ``final`` no
    longer links to, except those named in ``keep`` (the previous version, which a reader may still
    be reading). A folder moved aside by an interrupted swap is put back if ``final`` is missing.
    """
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return []
    prefix = f".{final.name}."
    current = _current_version(final)
    removed: list[Path] = []
    now = time.time()
    for entry in list(parent.iterdir()):
        name = entry.name
        if not name.startswith(prefix) or name == current or name in keep:
            continue
        rest = name[len(prefix):]
        legacy = rest.startswith("old.")  # an earlier polysteer's swap, interrupted
        version = rest.startswith(VERSION_MARK[1:])
        pid = (rest[len(VERSION_MARK) - 1:] if version else rest).split("-", 1)[0]
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if not legacy and not pid.isdigit():
            # an earlier polysteer's temporary name (no pid): debris once it is a day old
            if not (name.endswith(".tmp") and age > DEBRIS_AGE_S):
                continue
        elif not legacy and _pid_alive(int(pid)) and age < (VERSION_AGE_S if version else
                                                            DEBRIS_AGE_S):
            continue
        inner = entry / final.name
        if not os.path.lexists(final) and inner.is_dir() and not inner.is_symlink():
            os.replace(inner, final)  # a swap killed between its two renames: put it back
        _remove(entry)
        removed.append(entry)
    return removed


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap paths ``a`` and ``b`` (Linux renameat2); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _swap_aside(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` with two renames (a short window without ``final``)."""
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_tag()}.", suffix=".tmp",
                                  dir=final.parent))
    os.replace(final, aside / final.name)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(aside / final.name, final)  # put the previous version back
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _complete(final: Path, marker: str | None) -> bool:
    return bool(marker) and (final / marker).is_file()


def publish_folder(tmp: Path, final: Path, *, replace: bool = True, marker: str | None = None) -> bool:
    """Publish the finished folder ``tmp`` as ``final``, atomically for concurrent readers.

    A new ``final`` is ``tmp`` renamed. An existing one is replaced by a symlink to a new version
    folder, swapped in by one rename (see the comment above); the version it replaces is removed
    (a reader still reading it retries, see :func:`read_folder`). With ``replace=False`` a complete
    ``final`` (one holding the file ``marker``) is kept and False returned, as it is when a
    concurrent writer of the same folder won the race; the caller then deletes ``tmp``.
    """
    if not os.path.lexists(final):
        try:
            os.replace(tmp, final)
            return True
        except OSError:
            if not os.path.lexists(final):
                raise
            # a concurrent writer published first: replace its version as below
    if not replace and _complete(final, marker):
        return False
    previous = _current_version(final)
    version = final.parent / f".{final.name}{VERSION_MARK}{_tag()}"
    os.replace(tmp, version)
    link = final.parent / f".{final.name}.{_tag()}.lnk"
    try:
        os.symlink(version.name, link, target_is_directory=True)
    except (OSError, NotImplementedError):  # no symlinks here (e.g. Windows without the right)
        try:
            _swap_aside(version, final)
        except BaseException:
            _remove(version)
            raise
        return True
    try:
        if os.path.isdir(final) and not os.path.islink(final):
            if not _exchange(link, final):
                os.unlink(link)
                _swap_aside(version, final)
                return True
            # ``link`` now names the old real folder
            _remove(link)
        else:
            os.replace(link, final)
    except BaseException:
        if os.path.lexists(link):
            os.unlink(link)
        if _current_version(final) != version.name:
            _remove(version)
        raise
    if previous and previous != _current_version(final):
        _remove(final.parent / previous)
    clean_debris(final)
    return True


def pinned_folder(path: str | os.PathLike) -> Path:
    """The version folder ``path`` names right now (``path`` itself when it is a plain folder).

    Read every file of one load from the pinned folder so a concurrent publish cannot mix versions.
    """
    path = Path(path)
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


def read_folder(path: str | os.PathLike, load: Callable[[Path], T], *, attempts: int = 50) -> T:
    """``load(pinned_folder(path))``, retried when a concurrent publish removed or replaced the
    version while it was being read (so a reader sees the old or the new version, never nothing)."""
    path = Path(path)
    for attempt in range(attempts):
        real = pinned_folder(path)
        # a plain folder cannot be pinned: the first replace swaps it for a link and removes it, so
        # a load that saw the swap (its folder is no longer the one ``path`` names) is retried
        before = _identity(path) if real == path else None
        if real == path and before is None and attempt < attempts - 1 and (
                _swap_in_progress(path) or os.path.lexists(path)):
            # between the two renames of a swap without symlinks: wait for the new version (a load
            # begun now could not tell it read the new version and then, mid-load, the next one)
            time.sleep(0.002 * (attempt + 1))
            continue
        try:
            result = load(real)
        except (FileNotFoundError, NotADirectoryError, CorruptFileError):
            if attempt == attempts - 1:
                raise
            if before is not None and _identity(path) != before:
                moved = True
            elif os.path.lexists(path):
                moved = real != path and (not real.exists() or pinned_folder(path) != real)
            else:  # missing: a swap without symlinks may be between its two renames
                moved = _swap_in_progress(path) or os.path.lexists(path)
            if not moved:
                raise
            time.sleep(0.002 * (attempt + 1))
            continue
        if before is None or _identity(path) == before or attempt == attempts - 1:
            return result
    raise AssertionError("unreachable")


def _swap_in_progress(path: Path) -> bool:
    """Whether a swap without symlinks (:func:`_swap_aside`) has moved ``path`` aside: True while a
    live writer is between its two renames. A dead writer's (killed in between) is put back here,
    so a reader finds the previous version loadable without waiting for the next write."""
    if not path.parent.is_dir():
        return False
    found = False
    for entry in list(path.parent.iterdir()):
        match = _TEMP.fullmatch(entry.name)
        if not match or match["name"] != path.name or not (entry / path.name).is_dir():
            continue
        found = True
        if not _pid_alive(int(match["pid"])):
            try:
                os.replace(entry / path.name, path)  # only while ``path`` is missing
            except OSError:
                pass  # another reader or the next writer put it back first
    return found


def _identity(path: Path) -> tuple[int, int, int, bool] | None:
    """Which folder ``path`` names now (device, inode, change time, whether through a link; the
    change time tells a new folder that reuses a removed one's inode number from it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns, path.is_symlink()


def share_permissions(folder: Path) -> None:
    """Give a mkdtemp folder (owner-only) and everything in it the permissions a normally created
    one would have, so a shared cache stays readable by its other users."""
    publish_mode(folder, directory=True)
    for path in folder.rglob("*"):
        publish_mode(path, directory=path.is_dir())


@contextmanager
def staged_folder(final: str | os.PathLike, *, replace: bool = True, marker: str | None = None
                  ) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; when the block succeeds, publish it as
    ``final`` (see :func:`publish_folder` for ``replace`` and ``marker``). It is always cleaned up,
    and debris of earlier, killed writers of ``final`` is removed first (:func:`clean_debris`)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    current = _current_version(final)
    clean_debris(final, keep=(current,) if current else ())
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_tag()}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        share_permissions(tmp)
        publish_folder(tmp, final, replace=replace, marker=marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_folder(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write a folder under a temporary name with ``write(tmp)``, then publish it atomically."""
    with staged_folder(path) as tmp:
        write(tmp)
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (memory flat in file size)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON (a regular UTF-8 file, depth-limited), turning a broken file into a
    :class:`CorruptFileError` that names it."""
    return load_json(path)


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a broken file into a :class:`CorruptFileError`."""
    path = check_regular_file(path, "tensor file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        if not path.exists():  # removed while being opened (a concurrent replace)
            raise FileNotFoundError(f"{path} does not exist") from None
        raise CorruptFileError(
            f"{path} is not a readable safetensors file ({err}); the file is damaged or "
            "truncated: recreate or re-download it"
        ) from err


def read_meta(folder: str | os.PathLike, file: str, format: str, max_version: int, fix: str, *,
              shown: str | os.PathLike | None = None, what: str | None = None) -> dict[str, Any]:
    """The JSON metadata file ``folder/file`` of a polysteer folder, checked.

    It must exist (else :class:`FileNotFoundError`, so :func:`read_folder` retries a version that
    vanished mid-load), be a JSON object whose ``"format"`` is ``format`` and whose ``"version"``
    (absent: 1) is an integer no newer than ``max_version`` (else
    :class:`~polysteer.errors.CorruptFileError`). Messages name the file as ``shown`` (the path the
    user gave; default ``folder``), say what the folder should be (``what``, default ``format``) and
    end with ``fix`` (e.g. "fit the classifier again").
    """
    shown = Path(shown if shown is not None else folder)
    what = what or format
    path = Path(folder) / file
    if not path.is_file():
        raise FileNotFoundError(f"{shown} is not a {what} folder (no {file}); {fix}")
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != format:
        raise CorruptFileError(f"{shown / file} is not a {what} (format {format!r}); {fix}")
    version = meta.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CorruptFileError(f"{shown / file}: version must be a positive integer, got "
                               f"{version!r}; {fix}")
    if version > max_version:
        raise CorruptFileError(f"{shown / file} has format version {version}, this polysteer reads up "
                               f"to {max_version}: upgrade polysteer")
    return meta

