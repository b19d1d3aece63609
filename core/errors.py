"""Errors polysteer raises. Each message names the problem and how to fix it."""

from __future__ import annotations


class PolysteerError(Exception):
    """Base class of every error polysteer raises on purpose."""


class ConfigError(PolysteerError, ValueError):
    """A config or style has an unknown key or a bad value (the message holds its full path)."""


class RegistryError(PolysteerError, KeyError):
    """A name is registered twice, or looked up and not found."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(PolysteerError, ImportError):
    """An optional dependency is not installed; the message holds the pip command that fixes it."""


class DictionaryMismatchError(PolysteerError, ValueError):
    """A dictionary was made for another model or site than the one it is applied to."""


class CorruptFileError(PolysteerError, ValueError):
    """A file polysteer wrote or reads is unreadable, truncated or inconsistent."""


class SteeringError(PolysteerError, RuntimeError):
    """A style cannot be applied to a model (unknown site, feature, bad intensity...)."""
