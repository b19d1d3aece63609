"""Measures of generated text for ``polysteer run`` and ``polysteer create``.

* ``text_perplexity``: perplexity of the generated tokens given the prompt under the *unsteered*
  model that generated them (coherence: steering that breaks the text raises it);
* ``text_<concept>`` for each shipped SmolLM2 concept (``text_positive``, ``text_formal``,
  ``text_concise``, ``text_cautious``, ``text_pirate``, ``text_french``, ``text_golden-gate``,
  ``text_scam``): the generated text read back through that concept's dictionary by the unsteered
  model, the mean over its tokens in units of the feature's typical scale (how much of the
  concept the text carries, whatever made it).

Both are pure functions of the generation record: the model is loaded by the record's model name
(once per process), so they work for any text model ``polysteer.load_model`` can load by name; the
concept measures need the model the concept was built on (SmolLM2) and say so otherwise.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from polysteer import Generation, load_model

CONCEPTS = ("positive", "formal", "concise", "cautious", "pirate", "french", "golden-gate", "scam")
"""Shipped SmolLM2 concepts with a ``text_<concept>`` measure."""


@functools.lru_cache(maxsize=2)
def _judge(name: str) -> Any:
    """The unsteered model ``name`` (loaded once per process) that reads generations back."""
    return load_model(name)


def _judge_of(generation: Generation) -> Any:
    if generation.modality != "text":
        raise ValueError(f"text measures read text generations, got a {generation.modality} one")
    if not generation.model:
        raise ValueError("this text generation names no model, so there is no model to read it with")
    return _judge(generation.model)


def _texts(adapter: Any, generation: Generation) -> list[str]:
    return list(generation.texts) if generation.texts is not None else adapter.texts(generation)


@torch.no_grad()
def text_perplexity(generation: Generation, baseline: Generation | None = None) -> float:
    """Mean over rows of the perplexity of each row's generated tokens given its prompt, under the
    unsteered model that generated them (``nan`` when no row generated a token)."""
    adapter = _judge_of(generation)
    pad = adapter.tokenizer.pad_token_id
    values = []
    for row, length in zip(generation.outputs, generation.row_lengths().tolist(), strict=True):
        ids = row[:int(length)]
        start = 0
        if pad is not None:  # left padding of the prompt
            while start < generation.prompt_length and int(ids[start]) == pad:
                start += 1
        ids = ids[start:].unsqueeze(0).to(next(adapter.model.parameters()).device)
        prompt = generation.prompt_length - start
        if ids.shape[1] - prompt < 1 or prompt < 1:
            continue
        logits = adapter.model(input_ids=ids).logits.float()
        logprobs = torch.log_softmax(logits[0, prompt - 1:-1], dim=-1)
        nll = -logprobs.gather(-1, ids[0, prompt:, None]).mean()
        values.append(math.exp(float(nll)))
    return sum(values) / len(values) if values else float("nan")


def concept_measure(concept: str) -> Any:
    """``text_<concept>``: the mean read-out of the shipped ``smollm2-<concept>`` feature over the
    generated text (mean over rows)."""

    def measure(generation: Generation, baseline: Generation | None = None) -> float:
        from polysteer.plugins.text.inspect import read_text

        adapter = _judge_of(generation)
        values = []
        for text in _texts(adapter, generation):
            if not text.strip():
                continue
            readout = read_text(adapter, f"smollm2-{concept}", text)
            index = readout.labels.index(concept) if concept in readout.labels else 0
            values.append(float(readout.values[:, index].mean()))
        return sum(values) / len(values) if values else float("nan")

    measure.__name__ = f"text_{concept}"
    measure.__doc__ = (f"Mean read-out of the shipped SmolLM2 '{concept}' concept over the generated "
                       "text, read by the unsteered model (feature typical-scale units).")
    return measure


TEXT_MEASURES = {"text_perplexity": text_perplexity,
                 **{f"text_{c}": concept_measure(c) for c in CONCEPTS}}
"""Every text measure this plugin registers, by name."""
