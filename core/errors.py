"""Errors polysteer raises. Each message names the problem and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def did_you_mean(name: object, choices: Iterable[object], *, n: int = 3, cutoff: float = 0.6) -> str:
    """``" Did you mean 'a' or 'b'?"``: up to ``n`` of ``choices`` close to ``name``, or ``""``.

    The one "did you mean" of polysteer (sites, registries, catalogues, configs, styles, feature
    labels): append it to the first sentence of an error message. Similarity is
    :class:`difflib.SequenceMatcher`'s ratio, at least ``cutoff``, with case ignored (``Joe``
    finds ``joe``); equally close choices keep their given order (a site table's forward order).
    """
    target = str(name).lower()
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(target)
    scored = []
    for index, choice in enumerate(dict.fromkeys(map(str, choices))):
        matcher.set_seq1(choice.lower())
        if (matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff
                and (score := matcher.ratio()) >= cutoff):
            scored.append((-score, index, choice))
    close = [repr(choice) for _, _, choice in sorted(scored)[:n]]
    if not close:
        return ""
    return f" Did you mean {close[0] if len(close) == 1 else ', '.join(close[:-1]) + ' or ' + close[-1]}?"
