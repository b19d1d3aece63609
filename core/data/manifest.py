"""Manifests of converted folders (embedded models, voices): what was made, from what, and a file table.

:func:`write_model_manifest` is the one writer every converted artifact uses (text models, Piper
voices, Whisper models); :func:`is_complete` is the one "is it installed" check.

A converted folder (``home()/models/<name>/``) is built aside, gets a manifest listing every file
with its size and sha256, and is then renamed into place; the manifest, written last, marks a
complete install. :func:`folder_problems` compares a folder with its manifest (sizes only, or
re-hashing everything), so damage is reported with the file that changed.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from polysteer.data.formats import FOLDER_FORMAT
from polysteer.errors import CorruptFileError
from polysteer.io.fileio import read_json, sha256_file, write_json

MODEL_MANIFEST = "polysteer-model.json"
MODEL_MANIFEST_FORMAT = "polysteer-model"


def file_table(folder: Path, skip: str = MODEL_MANIFEST) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` for every file below ``folder`` except ``skip``."""
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != skip}


def library_versions(*packages: str) -> dict[str, str]:
    """Versions of torch and ``packages`` (``unknown`` if absent), recorded for provenance."""
    versions = {"torch": torch.__version__}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def write_manifest(folder: Path, manifest: dict[str, Any], name: str = MODEL_MANIFEST) -> None:
    """Write ``manifest`` plus the file table of ``folder`` as ``folder/name`` (atomically)."""
    write_json(folder / name, {"format": MODEL_MANIFEST_FORMAT, "format_version": 1, **manifest,
                               "files": file_table(folder, skip=name)})


def write_model_manifest(folder: Path, *, name: str, title: str, licence: str, source: dict[str, Any],
                         libraries: tuple[str, ...] = (), dtype: str = "float32",
                         readback: dict[str, Any] | None = None, **extra: Any) -> None:
    """The manifest of a converted artifact (what it is, where it came from, which library
    versions converted it, the file table); written last, it marks a complete install.

    ``readback`` (:func:`polysteer.data.formats.readback`) is what the converting transformers read
    back from the finished portable folder; with it the folder is marked as folder format
    :data:`~polysteer.data.formats.FOLDER_FORMAT` and checked against it on every load.
    """
    marks = {} if readback is None else {"folder_format": FOLDER_FORMAT, "readback": readback}
    write_manifest(folder, {"name": name, "title": title, "licence": licence, "dtype": dtype,
                            "source": source, **extra, **marks,
                            "converted_with": library_versions(*libraries)})


def is_complete(folder: str | os.PathLike, name: str = MODEL_MANIFEST) -> bool:
    """Whether a converted folder is complete: its manifest, written last, exists."""
    return (Path(folder) / name).is_file()


def _entry_problems(folder: Path, rel: str, entry: Any, rehash: bool) -> list[str]:
    path = folder / rel
    if not isinstance(entry, dict) or folder.resolve() not in path.resolve().parents:
        return [f"manifest entry {rel!r} is malformed"]
    if not path.is_file():
        return [f"{rel} is missing"]
    if path.stat().st_size != entry.get("bytes"):
        return [f"{rel} has {path.stat().st_size} bytes, the manifest says {entry.get('bytes')}"]
    if rehash and sha256_file(path) != entry.get("sha256"):
        return [f"{rel} does not match its sha256 in the manifest (the file was modified)"]
    return []


def folder_problems(folder: str | os.PathLike, rehash: bool, name: str = MODEL_MANIFEST) -> list[str]:
    """What differs between ``folder`` and its manifest (empty: intact).

    Without ``rehash`` only presence and sizes are checked (cheap, on every load); with it every
    file is re-hashed and files the manifest does not list are reported too.
    """
    folder = Path(folder)
    path = folder / name
    if not path.is_file():
        return [f"{path} is missing (an interrupted or foreign install)"]
    try:
        manifest = read_json(path)
    except CorruptFileError as err:
        return [f"{path} is unreadable ({err})"]
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return [f"{path} is not a polysteer manifest (no 'files' table)"]
    problems = [problem for rel, entry in sorted(files.items())
                for problem in _entry_problems(folder, rel, entry, rehash)]
    if rehash:
        problems += [f"{rel} is not in the manifest" for rel in file_table(folder, skip=name)
                     if rel not in files]
    return problems
