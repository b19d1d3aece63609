"""Site tables: canonical site names mapped to where each activation lives in a model.

Every adapter describes its sites with one type, a :class:`SiteTable`, in the spirit of pyvene's
per-architecture tables. For each canonical name (``blocks.12.resid_post``, ``mid``,
``decoder.input``), in forward order, a :class:`Site` row says

- ``module``: the dotted path of the module that holds the activation, relative to the model the
  adapter wraps (``adapter.model``; ``""`` is the model itself);
- ``hook``: ``"output"`` (the module's return value) or ``"input"`` (positional argument
  ``arg_index``, or keyword ``arg_name`` when it is passed by keyword);
- ``layout``: the :mod:`polysteer.steering.layout` object that presents the native value as
  ``(batch, positions, channels)``;
- ``channels``: the size of the channel axis.

Tables are plain data, but they may be built programmatically from the live model (a UNet's block
count, a transformer's depth). :meth:`SiteTable.resolve` is the one place a row is bound to a live
module (a :class:`SiteBinding`, what the runtime installs hooks on), and :class:`UnknownSiteError`
is the one error for a name the table lacks: it suggests close names and summarises how the
table's sites are spelled. ``ModelAdapter`` builds ``sites()`` and ``bind()`` on an adapter's
``site_table()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from polysteer.errors import SteeringError, did_you_mean
from polysteer.steering.layout import Layout

HookPoint = Literal["input", "output"]


@dataclass(frozen=True)
class SiteBinding:
    """Where a site lives: a module, whether its input or output is the activation, its layout.

    ``hook="output"`` reads the module's return value; ``hook="input"`` reads its positional
    argument ``arg_index`` (or keyword ``arg_name`` if it was passed by keyword).
    """

    module: nn.Module
    layout: Layout
    channels: int
    hook: HookPoint = "output"
    arg_index: int = 0
    arg_name: str = "hidden_states"


@dataclass(frozen=True)
class Site:
    """One row of a :class:`SiteTable`: which module holds a site and how its activation is read.

    ``module`` is a dotted path relative to the model (``"model.layers.3.mlp"``; ``""`` for the
    model itself). ``note`` is a short human description (shown by documentation, never parsed).
    """

    module: str
    layout: Layout
    channels: int
    hook: HookPoint = "output"
    arg_index: int = 0
    arg_name: str = "hidden_states"
    note: str = ""

    def __post_init__(self) -> None:
        if self.hook not in ("input", "output"):
            raise ValueError(f"hook must be 'input' or 'output', got {self.hook!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"channels must be a positive int, got {self.channels!r}")


class UnknownSiteError(SteeringError, KeyError):
    """A site name that a model's :class:`SiteTable` does not have (see :meth:`SiteTable.unknown`).

    The message names the site and the model, suggests close names and summarises the valid
    spellings. It is also a ``KeyError``, so a table behaves as a ``Mapping``.
    """

    def __init__(self, message: str, *, site: str = "", owner: str = ""):
        super().__init__(message)
        self.site = site
        self.owner = owner

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SiteTable(Mapping[str, Site]):
    """Canonical site name -> :class:`Site`, in forward order, for one model.

    ``rows`` is a mapping or an iterable of ``(name, Site)`` pairs (a repeated name is an error).
    ``owner`` names the model in error messages (``"reference"``, ``"this llama model"``).
    """

    def __init__(self, rows: Mapping[str, Site] | Iterable[tuple[str, Site]] = (), *,
                 owner: str = "this model"):
        self.owner = owner
        self._rows: dict[str, Site] = {}
        for name, site in (rows.items() if isinstance(rows, Mapping) else rows):
            if not isinstance(name, str) or not name:
                raise ValueError(f"site names must be non-empty strings, got {name!r}")
            if name in self._rows:
                raise ValueError(f"site {name!r} appears twice in the site table of {owner}")
            if not isinstance(site, Site):
                raise TypeError(f"site {name!r}: expected a polysteer.Site, got {type(site).__name__}")
            self._rows[name] = site

    def __getitem__(self, site: str) -> Site:
        try:
            return self._rows[site]
        except (KeyError, TypeError):
            raise self.unknown(site) from None

    def __contains__(self, site: object) -> bool:
        return site in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"SiteTable({self.owner!r}: {self.summary()})"

    def sites(self) -> list[str]:
        """Every site name, in forward order."""
        return list(self._rows)

    def unknown(self, site: str) -> UnknownSiteError:
        """The error for ``site``, which this table lacks: close names, then every valid spelling."""
        sites = self.sites()
        listing = f"Its sites are {self.summary()}" if sites else "It has no sites"
        return UnknownSiteError(
            f"unknown site {site!r} in {self.owner}.{did_you_mean(site, sites)} {listing}; "
            "`polysteer sites MODEL` lists them all", site=str(site), owner=self.owner)

    def summary(self) -> str:
        """The names, compressed where they follow a pattern (``blocks.0..11.{resid_pre,mlp_out}``)."""
        return summarize_sites(self.sites())

    def resolve(self, model: nn.Module, site: str) -> SiteBinding:
        """Bind ``site`` to the live module of ``model`` that the table names.

        ``model`` is the module the paths are relative to (an adapter's ``model``). An unknown
        name is an :class:`UnknownSiteError`; a path ``model`` does not have is a
        :class:`~polysteer.SteeringError` saying that the table does not fit the model.
        """
        row = self[site]
        try:
            module = model.get_submodule(row.module) if row.module else model
        except AttributeError as err:
            raise SteeringError(
                f"site {site!r} of {self.owner} is module {row.module!r}, which this "
                f"{type(model).__name__} does not have: its site table does not fit the model "
                "(a table is built for one architecture; rebuild it from this model)") from err
        return SiteBinding(module, row.layout, row.channels, hook=row.hook,
                           arg_index=row.arg_index, arg_name=row.arg_name)


def summarize_sites(names: Sequence[str]) -> str:
    """A short spelling of ``names`` (in their order): runs of indices become ``a..b`` and
    sibling kinds of one indexed prefix become ``{x,y}``, as in
    ``blocks.0..1.{resid_pre,attn_out}, mid``. A group whose indices are not a full grid (some
    blocks lack an attention) is listed name by name, so the summary never names a missing site.
    """
    groups: dict[tuple[str | None, ...], list[tuple[int, ...]]] = {}
    for name in names:
        parts = name.split(".")
        key = tuple(None if _is_index(p) else p for p in parts)
        groups.setdefault(key, []).append(tuple(int(p) for p in parts if _is_index(p)))
    items: list[tuple[tuple[str | None, ...], tuple[str, ...]]] = []  # (key, rendered indices)
    for key, values in groups.items():
        axes = [sorted(set(axis)) for axis in zip(*values, strict=True)]
        if math.prod(len(axis) for axis in axes) == len(set(values)):
            items.append((key, tuple(_span(axis) for axis in axes)))
        else:
            items += [(key, tuple(map(str, value))) for value in values]
    out: list[str] = []
    while items:
        key, spans = items.pop(0)
        kinds = [key[-1]]
        # sibling kinds: same indexed prefix and indices, different last word
        while (items and None in key[:-1] and key[-1] is not None and items[0][1] == spans
               and items[0][0][:-1] == key[:-1] and items[0][0][-1] is not None):
            kinds.append(items.pop(0)[0][-1])
        prefix = _fill(key[:-1] if len(kinds) > 1 else key, spans)
        out.append(f"{prefix}.{{{','.join(map(str, kinds))}}}" if len(kinds) > 1 else prefix)
    return ", ".join(out)


def _is_index(part: str) -> bool:
    return part.isdigit() and (part == "0" or not part.startswith("0"))


def _span(values: list[int]) -> str:
    if len(values) == 1:
        return str(values[0])
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return "{" + ",".join(map(str, values)) + "}"


def _fill(key: Sequence[str | None], spans: Sequence[str]) -> str:
    it = iter(spans)
    return ".".join(next(it) if part is None else part for part in key)
