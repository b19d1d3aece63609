"""Registries: named things that plugins contribute (adapters, interventions, schedules, ...).

Every registration records which plugin made it, so a duplicate name is an error naming both
plugins, ``polysteer plugins`` can say who registered what, and an entry whose optional
dependency is missing can say exactly which ``pip install`` fixes it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from polysteer.errors import MissingDependencyError, RegistryError, did_you_mean

T = TypeVar("T")


def catalogue_entry(catalogue: Mapping[str, T], name: str, what: str, otherwise: str) -> T:
    """``catalogue[name]``; otherwise an error naming close matches, every entry of the catalogue of
    ``what`` (e.g. "embedded voice") and what else may be passed (``otherwise``)."""
    if name in catalogue:
        return catalogue[name]
    raise RegistryError(f"no {what} {name!r}.{did_you_mean(name, sorted(catalogue))} Available: "
                        f"{', '.join(sorted(catalogue)) or 'none'}; {otherwise}")


@dataclass(frozen=True)
class Requirement:
    """An optional dependency: an importable ``module`` and the ``pip`` command that installs it."""

    module: str
    pip: str = ""

    @property
    def install(self) -> str:
        """The exact command that fixes a missing dependency."""
        return self.pip or f"pip install {self.module}"

    def satisfied(self) -> bool:
        """True if ``module`` can be imported (checked without importing it)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False


@dataclass(frozen=True)
class Entry:
    """One registered thing."""

    name: str
    value: Any
    plugin: str
    description: str = ""
    requires: tuple[Requirement, ...] = field(default_factory=tuple)

    def missing(self) -> list[Requirement]:
        """Requirements that are not installed."""
        return [r for r in self.requires if not r.satisfied()]


class Registry:
    """Name -> :class:`Entry` for one kind of thing (``what``, e.g. ``"intervention"``)."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, Entry] = {}
        self._plugin: str = "?"

    def register(self, name: str, value: Any, *, description: str = "",
                 requires: Sequence[Requirement | str] = ()) -> None:
        """Register ``value`` under ``name``; ``requires`` lists optional dependencies."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.what} names must be non-empty strings, got {name!r}")
        if name in self._entries:
            other = self._entries[name].plugin
            raise RegistryError(f"{self.what} {name!r} is registered twice: by plugin {other!r} "
                                f"and by plugin {self._plugin!r}; disable one of them with "
                                f"POLYSTEER_DISABLE_PLUGINS={self._plugin}")
        reqs = tuple(Requirement(r) if isinstance(r, str) else r for r in requires)
        if not description:
            doc = getattr(value, "__doc__", None) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        self._entries[name] = Entry(name, value, self._plugin, description, reqs)

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; an error lists close and available names."""
        if name not in self._entries:
            hint = did_you_mean(name, self._entries)
            raise RegistryError(f"unknown {self.what} {name!r}.{hint} Available: "
                                f"{', '.join(sorted(self._entries)) or 'none'}")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The registered value; raises if unknown or if its dependencies are missing."""
        entry = self.entry(name)
        missing = entry.missing()
        if missing:
            fixes = "; ".join(r.install for r in missing)
            raise MissingDependencyError(
                f"{self.what} {name!r} (plugin {entry.plugin!r}) needs "
                f"{', '.join(r.module for r in missing)}, which is not installed. Fix: {fixes}")
        return entry.value

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def by_plugin(self, plugin: str) -> list[Entry]:
        """Entries one plugin registered."""
        return [e for e in self._entries.values() if e.plugin == plugin]

    def remove_plugin(self, plugin: str) -> None:
        """Forget everything ``plugin`` registered (used when a plugin is unregistered)."""
        self._entries = {k: e for k, e in self._entries.items() if e.plugin != plugin}

    def _as(self, plugin: str) -> Registry:
        self._plugin = plugin
        return self
