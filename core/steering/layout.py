"""The one activation layout, ``(batch, positions, channels)``, and converters from native layouts.

Every site presents its activation to core as ``(B, P, C)``: tokens for text, spatial cells
(``H*W``) for an image block, time frames for audio. A :class:`Layout` converts a module's native
output (a tensor in another layout, or a tuple holding one) to that view and back, so that
dictionaries, interventions and read-outs never know the modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Layout(Protocol):
    """Converts a module's native activation to ``(B, P, C)`` and back."""

    def read(self, native: Any) -> torch.Tensor:
        """Return the activation as ``(batch, positions, channels)``."""

    def write(self, native: Any, x: torch.Tensor) -> Any:
        """Return ``native`` with its activation replaced by ``x`` (given as ``(B, P, C)``)."""

    def grid(self, native: Any) -> tuple[int, int] | None:
        """The spatial ``(H, W)`` that positions flatten, or ``None`` if positions are a sequence."""


class _Sequence:

    spatial = False  # positions are a sequence (tokens, frames), never a grid

    def grid(self, native: Any) -> tuple[int, int] | None:
        return None


@dataclass(frozen=True)
class BPC(_Sequence):
    """Already ``(batch, positions, channels)``: transformer hidden states."""

    def read(self, native: torch.Tensor) -> torch.Tensor:
        return native

    def write(self, native: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass(frozen=True)
class BCT(_Sequence):
    """Channels first, ``(batch, channels, time)``: convolutional audio models."""

    def read(self, native: torch.Tensor) -> torch.Tensor:
        return native.transpose(1, 2)

    def write(self, native: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


@dataclass(frozen=True)
class BCHW:
    """Images, ``(batch, channels, height, width)``; positions are the ``H*W`` cells, row-major."""

    spatial = True

    def read(self, native: torch.Tensor) -> torch.Tensor:
        return native.flatten(2).transpose(1, 2)

    def write(self, native: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(native.shape)

    def grid(self, native: torch.Tensor) -> tuple[int, int]:
        return tuple(native.shape[-2:])


@dataclass(frozen=True)
class InTuple:
    """The activation is item ``index`` of a tuple (or list) output, in layout ``inner``."""

    inner: Layout
    index: int = 0

    @property
    def spatial(self) -> bool | None:
        """Whether positions form a grid (as the inner layout says; ``None``: not known)."""
        return is_spatial(self.inner)

    def read(self, native: Any) -> torch.Tensor:
        return self.inner.read(native[self.index])

    def write(self, native: Any, x: torch.Tensor) -> Any:
        items = list(native)
        items[self.index] = self.inner.write(native[self.index], x)
        return type(native)(items) if isinstance(native, tuple | list) else items

    def grid(self, native: Any) -> tuple[int, int] | None:
        return self.inner.grid(native[self.index])


@dataclass(frozen=True)
class MaybeTuple:
    """The activation is a tensor, or item 0 of a tuple: transformers layers return either."""

    inner: Layout

    @property
    def spatial(self) -> bool | None:
        """Whether positions form a grid (as the inner layout says; ``None``: not known)."""
        return is_spatial(self.inner)

    def read(self, native: Any) -> torch.Tensor:
        return self.inner.read(native[0] if isinstance(native, tuple | list) else native)

    def write(self, native: Any, x: torch.Tensor) -> Any:
        if isinstance(native, tuple | list):
            return InTuple(self.inner).write(native, x)
        return self.inner.write(native, x)

    def grid(self, native: Any) -> tuple[int, int] | None:
        return self.inner.grid(native[0] if isinstance(native, tuple | list) else native)


def is_spatial(layout: Any) -> bool | None:
    """``True`` if ``layout``'s positions are the cells of a spatial grid, ``False`` if they are a
    sequence (tokens, frames), ``None`` if the layout does not say (its ``grid`` decides per call).
    A layout tells by a ``spatial`` attribute."""
    value = getattr(layout, "spatial", None)
    return value if isinstance(value, bool) else None


_NAMED: dict[str, Layout] = {"bpc": BPC(), "bct": BCT(), "bchw": BCHW()}


def layout_named(name: str) -> Layout:
    """A layout by name: ``bpc``, ``bct``, ``bchw``; prefix ``tuple:`` for item 0 of a tuple."""
    base = name.removeprefix("tuple:")
    if base not in _NAMED:
        raise ValueError(f"unknown layout {name!r}; choose one of {sorted(_NAMED)} "
                         "(optionally prefixed by 'tuple:')")
    inner = _NAMED[base]
    return InTuple(inner) if name.startswith("tuple:") else inner
