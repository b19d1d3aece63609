"""Atomic, code-free file formats: safetensors for tensors, JSON for metadata.

Nothing here unpickles: a shared dictionary or style must not be able to run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from polysteer.errors import CorruptFileError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path, directory: bool = False) -> None:
    """Give a temp file/folder the permissions a normally created one would have (umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish_mode(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def publish_folder(tmp: Path, final: Path, *, replace: bool = True, marker: str | None = None) -> bool:
    """Move the finished folder ``tmp`` to ``final``; readers never see a half-written one.

    An existing ``final`` is swapped out (and put back if the swap fails). With ``replace=False``
    a complete ``final`` (one holding the file ``marker``) is kept and False returned, as it is when
    a concurrent writer of the same folder won the race; the caller then deletes ``tmp``.
    """
    if final.exists():
        if not replace and marker and (final / marker).is_file():
            return False
        aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.replace(final, aside / final.name)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(aside / final.name, final)  # put the previous version back
            raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
        return True
    try:
        os.replace(tmp, final)
    except OSError:
        if marker and (final / marker).is_file():
            return False
        raise
    return True


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
    ``final`` (see :func:`publish_folder` for ``replace`` and ``marker``). It is always cleaned up."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
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
    """Read JSON, turning a broken file into a :class:`CorruptFileError` that names it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(
            f"{path} is not valid JSON ({err}); the file is damaged: recreate or re-download it"
        ) from err


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a broken file into a :class:`CorruptFileError`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFileError(
            f"{path} is not a readable safetensors file ({err}); the file is damaged or "
            "truncated: recreate or re-download it"
        ) from err
