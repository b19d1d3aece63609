"""The text plugin's parts of the core harvest: how texts are run, which token rows are kept.

* renderer ``text`` (:class:`TextRenderer`): tokenizes a batch of plain texts (no chat template
  by default), records the attention mask (before the forward pass, so the harvest may stop the
  pass after the deepest captured site) and runs one forward pass;
* row selector ``text-tokens`` (:func:`text_tokens`): the real tokens of each text, by default
  without each text's first token and without attention sinks (tokens whose norm exceeds
  :data:`OUTLIER_FACTOR` times the median of the batch's other kept tokens).

Texts are read in three ways, kept as they were because shipped artifacts depend on them; all three
are these two pieces with different options:

| reader | padding | max tokens | first token | sinks |
|---|---|---|---|---|
| concepts (:func:`~polysteer.plugins.text.concepts.build_concept`) | left | none | dropped | dropped |
| dictionaries (:func:`~polysteer.plugins.text.dictionary.harvest_texts`) | right | 128 | dropped | dropped |
| classifiers (:func:`~polysteer.plugins.text.classify.text_activations`) | right | 128 | kept | kept |

Padding side does not change a text's activations (attention masks them, positions are per text),
so the three differ only in truncation and in which rows they keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from polysteer.workflows import Rendered, Rows, RowSelector

OUTLIER_FACTOR = 10.0


class TextRenderer:
    """Renderer ``text``: one forward pass over a batch of texts.

    ``max_tokens`` truncates each text; ``padding_side`` is ``"left"`` or ``"right"``; ``chat``
    applies the tokenizer's chat template. Sets ``rendered.mask`` (``(B, P)`` bool) and
    ``rendered.info["tokens"]`` (real tokens in the batch) before running the model.
    """

    def __init__(self, max_tokens: int | None = None, padding_side: str = "left",
                 chat: bool = False, stop_early: bool = True):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.max_tokens, self.padding_side, self.chat = max_tokens, padding_side, chat
        self.stop_early = stop_early

    def encode(self, adapter: Any, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The batch as the model will read it (``input_ids``, ``attention_mask``)."""
        return adapter.encode(list(texts), chat=self.chat, max_tokens=self.max_tokens,
                              padding_side=self.padding_side)

    @torch.no_grad()
    def render(self, adapter: Any, rendered: Rendered) -> None:
        encoded = self.encode(adapter, rendered.inputs)
        rendered.mask = encoded["attention_mask"].bool()
        rendered.info["tokens"] = int(rendered.mask.sum())
        rendered.outputs = adapter.forward(encoded)[0]


def keep_mask(acts: torch.Tensor, attention_mask: torch.Tensor,
              outlier_factor: float | None = OUTLIER_FACTOR, skip_first: bool = True) -> torch.Tensor:
    """``(B, P)`` bool: real tokens, not the first of each text, not an attention sink.

    A sink is a token whose norm exceeds ``outlier_factor`` times the median norm of the other
    kept tokens of the batch (SmolLM2's first token is ~170x the median; later sinks also occur
    and would dominate every mean). ``outlier_factor=None`` keeps sinks; ``skip_first=False``
    keeps each text's first token.
    """
    mask = attention_mask.bool().to(acts.device)
    keep = mask & ~(mask.int().cumsum(1) == 1) if skip_first else mask
    if outlier_factor is not None and keep.any():
        norms = acts.float().norm(dim=-1)
        keep &= norms <= outlier_factor * norms[keep].median()
    return keep


def text_tokens(skip_first: bool = True, outlier_factor: float | None = OUTLIER_FACTOR) -> RowSelector:
    """Row selector ``text-tokens``: the tokens :func:`keep_mask` keeps, each with its text."""
    def select(acts: torch.Tensor, rendered: Rendered) -> Rows:
        if rendered.mask is None:
            raise ValueError("the text-tokens selector needs a renderer that records the attention "
                             "mask (renderer 'text')")
        keep = keep_mask(acts, rendered.mask, outlier_factor, skip_first)
        return Rows(acts[keep], keep.nonzero()[:, 0].cpu())
    return select
